"""`cairn artifacts list|upload|download|rm`: a run's artifacts (`-r RUN`, as MLflow's
`mlflow artifacts download -r RUN -a PATH`), or paths of the artifact store itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .._client import Client
from .._clients.artifacts import ArtifactClient
from .._clients.run_store import join, run_store, within_run
from .._names import segments_problem
from ..exceptions import InvalidArgumentError, NotFoundError
from ..models import ArtifactUri, parse_uri
from ..types import ListOptions, ObjectInfo, Pager
from ._calls import call, pages
from ._connection import connection_options
from ._output import JSON, echo, emit_list, emit_pages, is_terminal, output_option, plain

COLUMNS = [("path", "Path"), ("is_dir", "Dir"), ("size", "Bytes"), ("update_time", "Updated")]

run_option = click.option(
    "--run-id", "-r", "run_id", help="a run's artifacts (paths are within the run)"
)


async def location(client: Client, run_id: str | None) -> tuple[ArtifactClient, str]:
    """Where paths are: the run's artifact root, or the store's top (root "")."""
    if run_id:
        return await run_store(client.tracking, run_id)
    return client.artifacts, ""


def relative(info: ObjectInfo, root: str) -> dict[str, Any]:
    """An object as a record, its path relative to root."""
    record = plain(info)
    if root:
        record["path"] = info.path[len(root) + 1 :]
    return record


@click.group("artifacts")
def group() -> None:
    """Artifacts of a run (-r RUN) or of the artifact store: list, upload, download, rm."""


@group.command("list")
@click.argument("path", default="")
@run_option
@click.option("--recursive", is_flag=True, help="every object below, not one level")
@output_option
@connection_options
def list_artifacts(path: str, run_id: str | None, recursive: bool, output: str) -> None:
    """List the objects under PATH (one level; directories end with "/")."""
    place = _place(path, run_id)

    async def work(client: Client) -> None:
        store, root = await location(client, run_id)
        inside = join(root, None, place)
        prefix = inside + "/" if inside else ""

        def page(options: ListOptions) -> Any:
            return store.list(prefix, recursive=recursive, options=options)

        listed: Pager[ObjectInfo] = Pager(page)
        await emit_pages(
            output, pages(listed, None), lambda info: relative(info, root), COLUMNS, "Artifacts"
        )

    call(work)


@group.command("upload")
@click.argument("local_path", type=click.Path(exists=True, path_type=Path))
@run_option
@click.option(
    "--artifact-path",
    "-a",
    help="where: a directory within the run (-r), else the store path [default: the name]",
)
@click.option("--overwrite", is_flag=True, help="replace an object (runs always replace)")
@output_option
@connection_options
def upload(
    local_path: Path, run_id: str | None, artifact_path: str | None, overwrite: bool, output: str
) -> None:
    """Upload a file or a directory tree; list what was stored."""

    progress, is_dir = is_terminal(), local_path.is_dir()

    async def work(client: Client) -> list[dict[str, Any]]:
        if run_id:
            _, root = await location(client, run_id)
            stored: ObjectInfo | list[ObjectInfo]
            if is_dir:  # its files go under artifact_path, not under its name as well
                stored = await client.tracking.log_artifacts(
                    run_id, local_path, artifact_path, progress=progress
                )
            else:
                stored = await client.tracking.log_artifact(
                    run_id, local_path, artifact_path, progress=progress
                )
            infos = stored if isinstance(stored, list) else [stored]
            return [relative(info, root) for info in infos]
        target = artifact_path or local_path.name
        if is_dir:
            stored = await client.artifacts.upload_tree(
                target, local_path, overwrite=overwrite, progress=progress
            )
        else:
            stored = [
                await client.artifacts.upload(
                    target, local_path, overwrite=overwrite, progress=progress
                )
            ]
        return [plain(info) for info in stored]

    uploaded = call(work)
    if not uploaded:  # an empty tree: say so, where an empty table would leave it unsaid
        click.echo(f"Nothing uploaded: {local_path} holds no files.", err=True)
        if output != JSON:
            return
    emit_list(output, uploaded, COLUMNS, "Uploaded")


@group.command("download")
@run_option
@click.option("--artifact-path", "-a", default="", help="within the run (-r), else a store path")
@click.option(
    "--artifact-uri",
    "-u",
    help="instead: runs:/RUN/PATH, models:/NAME/VERSION (@ALIAS, /STAGE), cairn-artifacts://...",
)
@click.option("--dst-path", "-d", default=".", show_default=True, help="local directory")
@connection_options
def download(
    run_id: str | None, artifact_path: str, artifact_uri: str | None, dst_path: str
) -> None:
    """Download a file or a directory into --dst-path; print the local path written."""
    if bool(run_id) + bool(artifact_uri) + (not run_id and bool(artifact_path)) != 1:
        raise click.UsageError("give -r RUN (and -a PATH), -u URI, or -a STORE_PATH")
    if artifact_uri:  # else refused by download_artifacts, naming its run_id argument
        try:
            parse_uri(artifact_uri, "--artifact-uri")
        except InvalidArgumentError as error:
            raise click.UsageError(error.message) from None
    else:
        _place(artifact_path, run_id, "--artifact-path")
    destination = Path(dst_path)
    progress = is_terminal()

    async def work(client: Client) -> Any:
        if artifact_uri:
            return await client.tracking.download_artifacts(
                artifact_uri, dst_path=destination, progress=progress
            )
        if run_id:
            return await client.tracking.download_artifacts(
                run_id, artifact_path, destination, progress=progress
            )
        # As its cairn-artifacts:// URI: a directory keeps its name under --dst-path.
        uri = str(ArtifactUri(client.artifacts.project, artifact_path))
        return await client.tracking.download_artifacts(
            uri, dst_path=destination, progress=progress
        )

    echo(call(work))


@group.command("rm")
@click.argument("path")
@run_option
@click.option("--recursive", is_flag=True, help="every object under the directory PATH")
@click.option("-f", "--force", is_flag=True, help="a PATH that holds nothing is no error")
@connection_options
def remove(path: str, run_id: str | None, recursive: bool, force: bool) -> None:
    """Delete an object (or, with --recursive, a directory); print how many went."""
    if not path.strip("/") and not run_id:
        raise click.BadParameter(
            "name what to delete (or a run's whole artifacts with --run-id)", param_hint="PATH"
        )
    place = _place(path, run_id)
    if run_id and path.strip("/") and not place:  # `.`, `x/..`: a typo would take all
        raise click.BadParameter(
            f'{path!r} names the run\'s root: give "" to delete all its artifacts',
            param_hint="PATH",
        )

    async def work(client: Client) -> int:
        store, root = await location(client, run_id)
        target = join(root, None, place)
        try:
            deleted = await store.delete(target, recursive=recursive)
            if recursive and not deleted:  # nothing under it: the object, as `rm -r` deletes
                deleted = await store.delete(target)  # a file, or NOT_FOUND for a typo
            return deleted
        except NotFoundError as missing:
            if not recursive and await store.list(f"{target}/", options=ListOptions(limit=1)):
                raise click.UsageError(
                    f"{path!r} is a directory: add --recursive to delete everything under it"
                ) from None
            if force and missing.reason == "OBJECT_NOT_FOUND":  # as `rm -f` of nothing
                return 0
            if run_id:
                raise missing_from_run(missing, run_id, path) from None
            raise

    deleted = call(work)
    echo(f"deleted {deleted} object{'' if deleted == 1 else 's'}")


def _place(path: str, run_id: str | None, argument: str = "PATH") -> str:
    """path as every command reads it: within the run, as MLflow's store reads it (`./a`,
    `/a`; `..` above the run refused); else a store path, refused here as the store
    would refuse it (a leading `/`, an empty, `.` or `..` segment)."""
    if run_id:
        try:
            return within_run(path, argument)
        except InvalidArgumentError as error:
            why = error.message.removeprefix(f"{argument}: ")
            raise click.BadParameter(why, param_hint=argument) from None
    if path and (problem := segments_problem(path.rstrip("/").split("/"))):
        raise click.BadParameter(problem, param_hint=argument)
    return path.rstrip("/")


def missing_from_run(missing: NotFoundError, run_id: str, path: str) -> NotFoundError:
    """missing named as the user named it, as `download` does: the store's path holds the
    run's root, which the user never typed."""
    named = f"no artifact at {path.strip('/')!r}" if path.strip("/") else "no artifacts"
    return NotFoundError(
        f"run {run_id} has {named}",
        reason=missing.reason,
        metadata={**missing.metadata, "run_id": run_id, "path": path},
    )
