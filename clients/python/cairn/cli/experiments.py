"""`cairn experiments list|create|rename|delete|restore`."""

from __future__ import annotations

from typing import Any

import click

from .._client import Client
from ..types import Experiment, Pager, ViewType
from ._calls import call, pages
from ._connection import connection_options
from ._output import echo, emit_pages, output_option, plain

COLUMNS = [
    ("experiment_id", "ID"),
    ("name", "Name"),
    ("lifecycle_stage", "Stage"),
    ("creation_time", "Created"),
    ("tags", "Tags"),
]
VIEWS = {"active": ViewType.ACTIVE_ONLY, "deleted": ViewType.DELETED_ONLY, "all": ViewType.ALL}


def view_option(command: Any) -> Any:
    return click.option(
        "--view",
        type=click.Choice(list(VIEWS)),
        default="active",
        show_default=True,
        help="active, deleted or all",
    )(command)


@click.group("experiments")
def group() -> None:
    """Experiments: list, create, rename, delete, restore."""


@group.command("list")
@click.option("--filter", "filter_string", default="", help="e.g. \"name LIKE 'churn%'\"")
@click.option("--order-by", multiple=True, help="e.g. 'name ASC' (repeatable)")
@click.option("--max-results", type=click.IntRange(min=1), help="stop after this many")
@view_option
@output_option
@connection_options
def list_experiments(
    filter_string: str, order_by: tuple[str, ...], max_results: int | None, view: str, output: str
) -> None:
    """List experiments (filter language: docs/filters.md)."""

    async def work(client: Client) -> None:
        pager: Pager[Experiment] = Pager(
            lambda options: client.tracking.search_experiments(
                VIEWS[view], filter_string=filter_string, order_by=order_by, options=options
            )
        )
        await emit_pages(output, pages(pager, max_results), plain, COLUMNS, "Experiments")

    call(work)


@group.command("create")
@click.argument("name")
@click.option("--artifact-location", help="where its runs keep artifacts (default: the server's)")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="a tag (repeatable)")
@connection_options
def create_experiment(name: str, artifact_location: str | None, tags: tuple[str, ...]) -> None:
    """Create an experiment and print its id."""
    pairs = key_values(tags)
    experiment_id = call(
        lambda client: client.tracking.create_experiment(name, artifact_location, pairs)
    )
    echo(experiment_id)


def key_values(pairs: tuple[str, ...]) -> dict[str, str]:
    """KEY=VALUE options as a dict."""
    values = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--tag")
        values[key] = value
    return values


@group.command("rename")
@click.argument("experiment_id")
@click.argument("new_name")
@connection_options
def rename_experiment(experiment_id: str, new_name: str) -> None:
    """Rename an experiment."""
    call(lambda client: client.tracking.rename_experiment(experiment_id, new_name))


@group.command("delete")
@click.argument("experiment_id")
@connection_options
def delete_experiment(experiment_id: str) -> None:
    """Delete an experiment (soft: `restore` brings it back with its runs)."""
    call(lambda client: client.tracking.delete_experiment(experiment_id))


@group.command("restore")
@click.argument("experiment_id")
@connection_options
def restore_experiment(experiment_id: str) -> None:
    """Restore a deleted experiment."""
    call(lambda client: client.tracking.restore_experiment(experiment_id))
