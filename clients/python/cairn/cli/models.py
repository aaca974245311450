"""`cairn models list|describe|versions|alias|stage|download`: the model registry, by
model name and version number as MLflow names them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .._client import Client
from ..exceptions import InvalidArgumentError
from ..models import parse_uri
from ..types import ListOptions, MlflowModelVersion, ModelVersionStage, Pager, RegisteredModel
from ._calls import call, pages
from ._connection import connection_options
from ._output import echo, emit_object, emit_pages, is_terminal, output_option, plain

MODEL_COLUMNS = [
    ("name", "Name"),
    ("description", "Description"),
    ("aliases", "Aliases"),
    ("tags", "Tags"),
    ("last_update_time_since_epoch", "Updated"),
]
VERSION_COLUMNS = [
    ("version", "Version"),
    ("stage", "Stage"),
    ("aliases", "Aliases"),
    ("source_run_id", "Run"),
    ("source_uri", "Source"),
    ("create_time_since_epoch", "Created"),
]
STAGES = [stage.value for stage in ModelVersionStage]
# A version number, as the registry numbers them: from 1, in 64 bits.
VERSION = click.IntRange(1, 2**63 - 1)


def model_record(model: RegisteredModel) -> dict[str, Any]:
    """A model as a record, its latest_versions as stage: version (the registry returns
    the highest version in each stage; the version numbers alone lost the stage)."""
    record = plain(model)
    record["latest_versions"] = {v["stage"]: v["version"] for v in record["latest_versions"]}
    return record


@click.group("models")
def group() -> None:
    """Registered models: list, describe, versions, alias, stage, download."""


_NEWEST_FIRST = "version_number DESC"


def _one_key(ctx: click.Context, param: click.Parameter, keys: tuple[str, ...]) -> str | None:
    """The registry orders by one key: a second --order-by is refused, not left to
    replace the first."""
    if len(keys) > 1:
        raise click.BadParameter("the registry orders by one key: give it once", ctx, param)
    return keys[0] if keys else None


@group.command("list")
@click.option("--filter", "filter_string", default="", help="e.g. \"name LIKE 'churn%'\"")
@click.option(
    "--order-by",
    multiple=True,
    callback=_one_key,
    help="one key, e.g. 'last_updated_timestamp DESC' [default: name]",
)
@click.option("--max-results", type=click.IntRange(min=1), help="stop after this many")
@output_option
@connection_options
def list_models(
    filter_string: str, order_by: str | None, max_results: int | None, output: str
) -> None:
    """List registered models (filter language: docs/filters.md)."""
    order = [order_by] if order_by else None

    async def work(client: Client) -> None:
        def page(options: ListOptions) -> Any:
            return client.registry.search_registered_models(
                filter_string, options.limit or 100, order, options.next_page_token
            )

        listed: Pager[RegisteredModel] = Pager(page)
        await emit_pages(
            output, pages(listed, max_results), model_record, MODEL_COLUMNS, "Registered models"
        )

    call(work)


@group.command("describe")
@click.argument("name")
@output_option
@connection_options
def describe_model(name: str, output: str) -> None:
    """Show a registered model, with its latest version in each stage."""
    model = call(lambda client: client.registry.get_registered_model(name))
    emit_object(output, model_record(model), f"Model {name}")


@group.command("versions")
@click.argument("name")
@click.option("--filter", "filter_string", default="", help="more conditions, e.g. \"tags.x='y'\"")
@click.option(
    "--order-by", multiple=True, callback=_one_key, help=f"one key [default: {_NEWEST_FIRST}]"
)
@click.option("--max-results", type=click.IntRange(min=1), help="stop after this many")
@output_option
@connection_options
def list_versions(
    name: str, filter_string: str, order_by: str | None, max_results: int | None, output: str
) -> None:
    """List the versions of model NAME, newest first."""

    async def work(client: Client) -> None:
        # By the model's id, not a condition on its name around the filter: an error's
        # position is then the filter's as written, and no ")" in it reaches past it.
        model = await client.registry.get_registered_model(name)

        def page(options: ListOptions) -> Any:
            return client.registry.search_model_versions(
                filter_string,
                options.limit or 100,
                [order_by or _NEWEST_FIRST],
                options.next_page_token,
                registered_model_id=model.id,
            )

        listed: Pager[MlflowModelVersion] = Pager(page)
        title = f"Versions of {name}"
        await emit_pages(output, pages(listed, max_results), plain, VERSION_COLUMNS, title)

    call(work)


@group.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", required=False, type=VERSION)
@click.option("--delete", is_flag=True, help="remove the alias instead")
@connection_options
def alias(name: str, alias: str, version: int | None, delete: bool) -> None:
    """Point ALIAS of model NAME at VERSION (moving it from any other), or --delete it."""
    if delete == (version is not None):
        raise click.UsageError("give VERSION, or --delete")
    if delete:
        call(lambda client: client.registry.delete_registered_model_alias(name, alias))
    else:
        call(lambda client: client.registry.set_registered_model_alias(name, alias, version or 0))


@group.command("stage")
@click.argument("name")
@click.argument("version", type=VERSION)
@click.argument("stage", type=click.Choice(STAGES, case_sensitive=False))
@click.option("--archive-existing", is_flag=True, help="archive the others in that stage")
@output_option
@connection_options
def stage(name: str, version: int, stage: str, archive_existing: bool, output: str) -> None:
    """Move VERSION of model NAME to a stage (MLflow's None/Staging/Production/Archived)."""
    moved = call(
        lambda client: client.registry.transition_model_version_stage(
            name, version, stage, archive_existing
        )
    )
    emit_object(output, plain(moved), f"{name} version {version}")


@group.command("download")
@click.argument("name")
@click.option("--version", "-v", "version", type=VERSION, help="a version number")
@click.option("--alias", "-a", "alias_name", help="or an alias, e.g. champion")
@click.option(
    "--stage",
    "-s",
    "stage_name",
    type=click.Choice(STAGES, case_sensitive=False),
    help="or a stage: its latest version",
)
@click.option("--dst-path", "-d", default=".", show_default=True, help="local directory")
@connection_options
def download(
    name: str, version: int | None, alias_name: str | None, stage_name: str | None, dst_path: str
) -> None:
    """Download a model version's files (checked against their manifest) into
    --dst-path; print the local path written."""
    chosen = [v for v in (version, alias_name, stage_name) if v]
    if len(chosen) != 1:
        raise click.UsageError("give one of --version, --alias, --stage")
    if not name:  # else quoted as the URI models://1, which the user never typed
        raise click.BadParameter("must not be empty", param_hint="NAME")
    if alias_name is not None and ("/" in alias_name or "@" in alias_name):
        raise click.BadParameter(
            f"{alias_name!r}: an alias has no '/' or '@'", param_hint="--alias"
        )
    uri = f"models:/{name}@{alias_name}" if alias_name else f"models:/{name}/{chosen[0]}"
    try:  # else refused by download_artifacts, naming its run_id argument (status 1)
        parse_uri(uri, "NAME")
    except InvalidArgumentError as error:
        raise click.UsageError(error.message) from None
    written = call(
        lambda client: client.tracking.download_artifacts(
            uri, dst_path=Path(dst_path), progress=is_terminal()
        )
    )
    echo(written)
