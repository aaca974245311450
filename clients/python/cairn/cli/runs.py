"""`cairn runs list|describe|delete|restore`."""

from __future__ import annotations

from typing import Any

import click

from .._client import Client
from .._names import EXPERIMENT_ID
from ..exceptions import NotFoundError
from ..types import Pager, Run
from ._calls import call, pages
from ._connection import connection_options
from ._output import emit_object, emit_pages, output_option, plain
from .experiments import VIEWS, view_option

COLUMNS = [
    ("run_id", "Run ID"),
    ("run_name", "Name"),
    ("status", "Status"),
    ("start_time", "Started"),
    ("metrics", "Metrics"),
    ("params", "Params"),
]


def run_record(run: Run) -> dict[str, Any]:
    """A run as one flat object: its info's fields, then what was logged."""
    data = run.data
    return {
        **plain(run.info),
        "metrics": data.metrics,
        "params": data.params,
        "tags": data.tags,
        "inputs": plain(run.inputs),
    }


@click.group("runs")
def group() -> None:
    """Runs: list (search), describe, delete, restore."""


@group.command("list")
@click.option(
    "--experiment",
    "-e",
    "experiments",
    multiple=True,
    required=True,
    help="an experiment's name or id (repeatable)",
)
@click.option("--filter", "filter_string", default="", help='e.g. "metrics.acc > 0.9"')
@click.option("--order-by", multiple=True, help="e.g. 'metrics.acc DESC' (repeatable)")
@click.option("--max-results", type=click.IntRange(min=1), help="stop after this many")
@view_option
@output_option
@connection_options
def list_runs(
    experiments: tuple[str, ...],
    filter_string: str,
    order_by: tuple[str, ...],
    max_results: int | None,
    view: str,
    output: str,
) -> None:
    """List runs of experiments, newest first unless --order-by says otherwise
    (filter language: docs/filters.md)."""

    async def work(client: Client) -> None:
        ids = [await experiment_id(client, e) for e in experiments]
        pager = Pager(
            lambda options: client.tracking.search_runs(
                ids, filter_string, VIEWS[view], order_by=order_by, options=options
            )
        )
        await emit_pages(output, pages(pager, max_results), run_record, COLUMNS, "Runs")

    call(work)


async def experiment_id(client: Client, name_or_id: str) -> str:
    """The id of the experiment of that name, else name_or_id itself when it is the id
    of one (a typo of an id used to list nothing, as an experiment without runs does).

    Raises:
        NotFoundError: no experiment has that name or id.
    """
    found = await client.tracking.get_experiment_by_name(name_or_id)
    if found:
        return found.experiment_id
    if EXPERIMENT_ID.fullmatch(name_or_id):  # "0" and "007" are no id: the server refuses them
        return (await client.tracking.get_experiment(name_or_id)).experiment_id
    hint = "; Cairn has no Default experiment 0, as MLflow has" if name_or_id == "0" else ""
    raise NotFoundError(f"no experiment named {name_or_id!r}{hint}", reason="EXPERIMENT_NOT_FOUND")


@group.command("describe")
@click.argument("run_id")
@output_option
@connection_options
def describe_run(run_id: str, output: str) -> None:
    """Show a run: its info, metrics (latest values), params, tags and inputs."""
    run = call(lambda client: client.tracking.get_run(run_id))
    emit_object(output, run_record(run), f"Run {run_id}")


@group.command("delete")
@click.argument("run_id")
@connection_options
def delete_run(run_id: str) -> None:
    """Delete a run (soft: `restore` brings it back)."""
    call(lambda client: client.tracking.delete_run(run_id))


@group.command("restore")
@click.argument("run_id")
@connection_options
def restore_run(run_id: str) -> None:
    """Restore a deleted run."""
    call(lambda client: client.tracking.restore_run(run_id))
