"""MLflow's `log_image`, `log_table` and `load_table` on `TrackingClient`, in MLflow's formats.

Images are stored as PNG; tables as JSON in pandas' "split" orientation
(`{"columns": [...], "data": [[...], ...]}`), the file MLflow writes and reads, so a
table logged by either can be loaded by the other. numpy, Pillow and pandas are used
when installed and never required: without Pillow an image is a numpy array (or PNG
bytes) and only `.png` files are written; without pandas a table is a dict and
`load_table` returns the split dict.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import re
import struct
import uuid
import warnings
import weakref
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from .._argument_error import invalid_argument
from .._names import MAX_TAG_VALUE_LENGTH
from .._numbers import whole, whole_or_zero
from .._page_tokens import check_token_is_new
from ..exceptions import NotFoundError
from ..types._paging import PagedList
from ..types._tracking import ATTRIBUTES, Run, now_ms
from .artifacts import ArtifactClient
from .run_operations import RunOperations
from .run_store import RunClient, file_name, join, run_store
from .split_tables import append, parse_table, table_json

# MLflow's tag names (mlflow.utils.mlflow_tags).
MLFLOW_LOGGED_IMAGES = "mlflow.loggedImages"
MLFLOW_LOGGED_ARTIFACTS = "mlflow.loggedArtifacts"
_IMAGE_KEY = re.compile(r"^[a-zA-Z0-9_\-./ ]+$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FORBIDDEN_IN_TABLE_FILE = ['"', "'", ",", ":", "[", "]", "{", "}"]
_RUN_LOGGED = ("metrics", "params", "tags")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


class _MediaClient(RunClient, Protocol):
    async def set_tag(
        self, run_id: str, key: str, value: Any, synchronous: bool | None = None
    ) -> RunOperations | None: ...

    async def search_runs(
        self, experiment_ids: Any, filter_string: str = "", *args: Any, **kwargs: Any
    ) -> PagedList[Run]: ...


class RunMedia:
    """Mixed into TrackingClient."""

    async def log_image(
        self: _MediaClient,
        run_id: str,
        image: Any,
        artifact_file: str | None = None,
        key: str | None = None,
        step: int | None = None,
        timestamp: int | None = None,
        synchronous: bool | None = None,
    ) -> RunOperations | None:
        """Stores an image (numpy array, PIL image, or PNG bytes) as MLflow does: at
        artifact_file, or with key (and step, timestamp) as
        `images/<key>%step%<step>%timestamp%<ms>%<uuid>.png`, tagging the run
        "mlflow.loggedImages". MLflow's compressed .webp copy is written only when
        Pillow is installed. synchronous=False uploads in the background.

        Float pixels are multiplied by 255 and truncated, as MLflow does; floats
        outside [0, 1] are first min/max scaled to [0, 1], with a warning.

        Raises:
            TypeError: artifact_file together with key, step or timestamp, or neither
                artifact_file nor key (MLflow's rule); pixels neither bool, integer
                nor real float (complex, object, strings).
            InvalidArgumentError: a key with characters MLflow refuses, a format other than
                PNG without Pillow, integer pixels outside [0, 255], or NaN or
                infinite float pixels.
        """
        if artifact_file is not None and any(a is not None for a in (key, step, timestamp)):
            raise TypeError("artifact_file cannot be used with key, step or timestamp")
        if artifact_file is None and key is None:
            raise TypeError("give exactly one of artifact_file or key")
        if key is not None and not _IMAGE_KEY.match(key):
            raise invalid_argument(
                "key",
                "may only contain alphanumerics, underscores, dashes, periods, "
                f"spaces and slashes: {key!r}",
            )
        if artifact_file is None:
            step = whole_or_zero(step, "step")
            if timestamp is None:
                timestamp = now_ms()
            base = f"images/{str(key).replace('/', '#')}%step%{step}"
            base += f"%timestamp%{whole(timestamp, 'timestamp')}%{uuid.uuid4()}"
            files = {f"{base}.png": _encode(image, "png")}
            webp = _webp(image)
            if webp is not None:
                files[f"{base}%compressed.webp"] = webp
        else:
            name = file_name(artifact_file)
            files = {name: _encode(image, name.rsplit(".", 1)[-1].lower())}

        async def upload() -> None:
            store, root = await run_store(self, run_id, writing=True)
            for path, data in files.items():
                await store.upload(join(root, None, path), data, overwrite=True)
            if key is not None:
                await self.set_tag(run_id, MLFLOW_LOGGED_IMAGES, True)

        def held() -> int:  # while queued
            return sum(len(data) for data in files.values())

        return await self._write(upload(), synchronous, held)  # type: ignore[attr-defined]

    async def log_table(self: _MediaClient, run_id: str, data: Any, artifact_file: str) -> None:
        """Stores a table (a pandas DataFrame, or a dict made into the rows MLflow's
        `pd.DataFrame(data)` makes: sequences and arrays are columns, scalars beside
        them repeated, scalars alone one row) as JSON in pandas' split orientation; a
        table already at artifact_file gets the rows appended, as in MLflow. The run is
        tagged "mlflow.loggedArtifacts" so load_table finds it.

        Appends to one file through one client (or the clients of its channel) are
        made one after another, so rows logged at once are all kept; appends from
        different channels or processes are not serialized (as in MLflow, the last
        write of the file wins).

        A NaN or infinite float cell is written as null, as pandas writes it. Nothing
        is written when a check below fails.

        Raises:
            InvalidArgumentError: artifact_file is not .json (.parquet needs pandas with pyarrow
                in MLflow and is not written here) or holds a character MLflow refuses;
                columns of different lengths; a column name given to two columns of the
                stored table or of data, their columns not the same; the run's tag
                "mlflow.loggedArtifacts" too long (MAX_TAG_VALUE_LENGTH) to list one
                more table.
            FailedPreconditionError: the file at artifact_file is no table in the split
                orientation (INVALID_TABLE).
            TypeError: data neither a dict nor a DataFrame; a set or an iterator as a column.
        """
        artifact_file = _table_file(artifact_file)
        table = _split(data)
        store, root = await run_store(self, run_id, writing=True)
        path = join(root, None, artifact_file)
        # Appending reads the file and writes it whole: two appends at once would each
        # write the old rows plus their own, and one would be lost. Locked by the path
        # stored ("t.json" and "/t.json" are one file).
        async with _lock(self, run_id, path):
            existing = await _stored_table(store, path, artifact_file, run_id)
            if existing is not None:
                table = append(existing, table, artifact_file)
            body = table_json(table)
            # The tag first, then the file. A file stored and then a tag refused, or
            # not sent, left rows load_table did not find, which a retry appended
            # again. Tagged first, a failed upload leaves a tag that load_table reads
            # as no rows yet (below), and a retry stores the rows once.
            await _list_table(self, run_id, artifact_file)
            await store.upload(path, body, overwrite=True, content_type="application/json")

    async def load_table(
        self: _MediaClient,
        experiment_id: str,
        artifact_file: str,
        run_ids: Iterable[str] | None = None,
        extra_columns: list[str] | None = None,
    ) -> Any:
        """The table logged at artifact_file by the experiment's runs (or by run_ids),
        rows of all runs concatenated. extra_columns adds columns of the run's row in
        MLflow's search_runs table, as MLflow does: `run_id`, `run_name`,
        `experiment_id`, `status` (a string), `artifact_uri`, `start_time` and
        `end_time` (UTC datetimes, None for a run not ended), `metrics.<key>` (NaN
        where the run lacks it), `params.<key>` and `tags.<key>` (None where the run
        lacks them); a column the table already has is added as `<name>_`, with a
        warning. A pandas DataFrame when pandas is installed, else the split dict
        {"columns": [...], "data": [...]}. A run tagged with the table whose file is
        not stored has no rows: log_table tags the run before it stores the file.

        Raises:
            InvalidArgumentError: an extra column search_runs' table does not have; a
                column name given to two columns of a run's table, the runs' columns
                not the same.
            FailedPreconditionError: a run's file is no table in the split orientation
                (INVALID_TABLE).
            NotFoundError: no run has the table (reason ARTIFACT_NOT_FOUND).
        """
        artifact_file = _table_file(artifact_file)
        extra_columns = list(extra_columns or ())
        for column in extra_columns:
            _check_run_column(column)
        wanted = set(run_ids or ())  # read once: a generator would be used up
        entry = json.dumps({"path": artifact_file, "type": "table"})
        runs = [
            r
            for r in await _every_run(self, experiment_id)
            if (not wanted or r.info.run_id in wanted)
            and entry in r.data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "")
        ]
        combined: dict[str, Any] | None = None
        for run in runs:
            store, root = await run_store(self, run.info.run_id)
            path = join(root, None, artifact_file)
            table = await _stored_table(store, path, artifact_file, run.info.run_id)
            if table is None:  # tagged by a log_table that has not stored the file
                continue
            for column in extra_columns:
                table = _with_column(table, column, _run_column(run, column))
            combined = table if combined is None else append(combined, table, artifact_file)
        if combined is None:
            raise NotFoundError(
                f"no run of experiment {experiment_id} has the table {artifact_file!r}",
                reason="ARTIFACT_NOT_FOUND",
            )
        return _as_frame(combined)


def _lock(client: Any, run_id: str, name: str) -> asyncio.Lock:
    """The lock on one read-modify-write of a run (a table file, a tag) of the clients
    of client's channel (for_project's too); kept while someone holds or waits for it."""
    locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock]
    locks = client._transport.shared.setdefault("media_locks", weakref.WeakValueDictionary())
    lock = locks.get((run_id, name))
    if lock is None:
        lock = locks[(run_id, name)] = asyncio.Lock()
    return lock


async def _stored_table(
    store: ArtifactClient, path: str, artifact_file: str, run_id: str
) -> dict[str, Any] | None:
    """The table the run stores at path (parse_table), None when it stores no file there."""
    try:
        data = await store.read(path)
    except NotFoundError:
        return None
    return parse_table(data, artifact_file, run_id)


async def _list_table(client: _MediaClient, run_id: str, artifact_file: str) -> None:
    """artifact_file added to the run's tag "mlflow.loggedArtifacts", the JSON list of
    its tables MLflow keeps, unless listed already.

    Raises:
        InvalidArgumentError: the list would be longer than a tag's value may be.
    """
    async with _lock(client, run_id, MLFLOW_LOGGED_ARTIFACTS):  # the tag is a list too
        tags = (await client.get_run(run_id)).data.tags
        logged = json.loads(tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
        entry = {"path": artifact_file, "type": "table"}
        if entry in logged:
            return
        value = json.dumps([*logged, entry])
        if len(value) > MAX_TAG_VALUE_LENGTH:
            raise invalid_argument(
                "artifact_file",
                f"{artifact_file!r} does not fit in the run's tag {MLFLOW_LOGGED_ARTIFACTS}, "
                f"which lists its tables in at most {MAX_TAG_VALUE_LENGTH} characters "
                f"({len(value)} with it): log the table to a file the run has already",
            )
        await client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, value)


async def _every_run(client: _MediaClient, experiment_id: str) -> list[Run]:
    runs: list[Run] = []
    token, sent = None, set[str]()
    while True:
        page = await client.search_runs([experiment_id], "", max_results=1000, page_token=token)
        runs.extend(page)
        if token:
            sent.add(token)
        token = page.next_page_token
        if not token:
            return runs
        check_token_is_new(token, sent)


def _table_file(artifact_file: str) -> str:
    """artifact_file checked as a table's and normalised as any file's (file_name), so
    that "./t.json" and "t.json" are one table, stored and found alike."""
    for char in _FORBIDDEN_IN_TABLE_FILE:
        if char in artifact_file:
            raise invalid_argument("artifact_file", f"contains forbidden character: {char}")
    if not artifact_file.endswith(".json"):
        raise invalid_argument(
            "artifact_file", f"tables are stored as .json files: {artifact_file!r}"
        )
    return file_name(artifact_file)


def _split(data: Any) -> dict[str, Any]:
    """pandas' split orientation of a DataFrame, or of a dict as MLflow makes it one
    (`pd.DataFrame(data)`, else one row): a sequence or array is a column, a scalar
    beside columns is repeated on each row, and a dict of scalars is one row."""
    if hasattr(data, "to_json") and hasattr(data, "columns"):
        return json.loads(data.to_json(orient="split", index=False, date_format="iso"))
    if not isinstance(data, dict):
        raise TypeError("data must be a dict or a pandas.DataFrame")
    values = [_column_or_scalar(name, value) for name, value in data.items()]
    lengths = {len(v) for v in values if isinstance(v, list)}
    if not lengths:
        # All scalars: one row, as in MLflow; no columns at all: no row (pd.DataFrame({})).
        return {"columns": list(data), "data": [values] if values else []}
    if len(lengths) > 1:
        raise invalid_argument(
            "data", f"all columns of a table must have the same length: found {sorted(lengths)}"
        )
    rows = lengths.pop()
    columns = [v if isinstance(v, list) else [v] * rows for v in values]
    return {"columns": list(data), "data": [list(row) for row in zip(*columns, strict=True)]}


def _column_or_scalar(name: str, value: Any) -> Any:
    """A column as a list of plain cells, or a scalar cell, as pandas tells them apart:
    strings and bytes are scalars; a list, tuple, range, numpy array or pandas Series is
    a column; a set (no order) or an iterator (no length) is refused, as pandas
    refuses them."""
    if isinstance(value, str | bytes | bytearray):
        return value
    if isinstance(value, set | frozenset | Iterator):
        raise TypeError(f"column {name!r} is a set or an iterator: give a list")
    if getattr(value, "ndim", 1) == 0:  # a numpy scalar
        return _plain(value)
    if hasattr(value, "tolist"):  # numpy array, pandas Series
        if value.ndim > 1:
            raise invalid_argument("data", f"column {name!r} is not one-dimensional")
        return list(value.tolist())
    if isinstance(value, Sequence):
        return [_plain(cell) for cell in value]
    return value


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value


def _check_run_column(column: str) -> None:
    kind, _, key = column.partition(".")
    if column not in ATTRIBUTES and not (kind in _RUN_LOGGED and key):
        raise invalid_argument(
            "extra_columns",
            f"{column!r} is no column of search_runs' table: {', '.join(ATTRIBUTES)}, "
            "metrics.<key>, params.<key> or tags.<key>",
        )


def _run_column(run: Run, column: str) -> Any:
    """The run's cell of column (_check_run_column) in its row of mlflow.search_runs."""
    kind, _, key = column.partition(".")
    if kind in _RUN_LOGGED and key:
        logged: dict[str, Any] = getattr(run.data, kind)
        return logged.get(key, math.nan if kind == "metrics" else None)
    value = getattr(run.info, column)
    if column == "status":
        return str(value.value)
    if column == "end_time" and not value:  # not ended: MLflow's NaT
        return None
    if column in ("start_time", "end_time"):
        try:
            return _EPOCH + datetime.timedelta(milliseconds=value)
        except OverflowError:  # past the year 9999, which the server keeps: as the CLI,
            return value  # the number, rather than no table at all
    return value


def _with_column(table: dict[str, Any], column: str, value: Any) -> dict[str, Any]:
    """The table with column set to value on each row; a column it already has is set
    as `<column>_` instead (replacing one of that name), with a warning, as in MLflow."""
    columns = list(table["columns"])
    if column in columns:
        warnings.warn(
            f"column {column} already exists in the table: added as {column}_, as MLflow does",
            stacklevel=3,
        )
        column += "_"
    if column in columns:
        at = columns.index(column)
        return {"columns": columns, "data": [[*r[:at], value, *r[at + 1 :]] for r in table["data"]]}
    return {"columns": [*columns, column], "data": [[*r, value] for r in table["data"]]}


def _as_frame(table: Any) -> Any:
    try:
        import pandas
    except ImportError:
        return table
    return pandas.DataFrame(table["data"], columns=table["columns"])


def _encode(image: Any, extension: str) -> bytes:
    """The image as a file of its extension: PIL for any format it knows, else PNG."""
    if isinstance(image, bytes | bytearray):
        if extension != "png" or not bytes(image).startswith(_PNG_SIGNATURE):
            raise invalid_argument("image", "image bytes are accepted as PNG files (.png) only")
        return bytes(image)
    if hasattr(image, "save") and hasattr(image, "resize"):  # a PIL image
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="JPEG" if extension == "jpg" else extension.upper())
        return buffer.getvalue()
    if extension != "png":
        raise invalid_argument(
            "artifact_file", f".{extension} needs Pillow; without it images are stored as .png"
        )
    return png(image)


def _webp(image: Any) -> bytes | None:
    try:
        import PIL.Image
    except ImportError:
        return None
    import io

    picture = (
        image if isinstance(image, PIL.Image.Image) else PIL.Image.open(io.BytesIO(png(image)))
    )
    buffer = io.BytesIO()
    picture.save(buffer, format="WEBP")
    return buffer.getvalue()


def png(image: Any) -> bytes:
    """A PNG of a numpy array as MLflow converts it (`_to_uint8`); shape (H, W) grey,
    (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA."""
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    import numpy

    array = _to_uint8(numpy.asarray(image))
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    colour = {2: 0, 3: {3: 2, 4: 6}.get(array.shape[-1], -1) if array.ndim == 3 else -1}
    kind = colour.get(array.ndim, -1)
    if kind < 0:
        raise invalid_argument(
            "image", f"an image has shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4): {array.shape}"
        )
    height, width = array.shape[:2]
    if not height or not width:  # a PNG of no pixels opens in no reader
        raise invalid_argument("image", f"an image has at least one pixel: shape {array.shape}")
    rows = array.reshape(height, -1)
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, kind, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def _to_uint8(array: Any) -> Any:
    """MLflow's conversion (mlflow.data.image's _normalize_to_uint8): integers in
    [0, 255] as they are; floats (and bools) times 255 then truncated, not rounded, by
    astype(uint8); floats outside [0, 1] first min/max scaled to [0, 1] with a warning.

    Raises:
        TypeError: a dtype that is not bool, integer or real float.
        InvalidArgumentError: integers outside [0, 255]; NaN or infinite floats.
    """
    import numpy

    if array.dtype.kind not in "biuf":
        raise TypeError(f"an image has bool, integer or float pixels, not {array.dtype}")
    if not array.size:
        return array.astype(numpy.uint8)
    if array.dtype.kind in "iu":
        if array.min() < 0 or array.max() > 255:
            raise invalid_argument(
                "image",
                f"integer pixel values must be in [0, 255]: found {array.min()} to {array.max()}",
            )
        return array.astype(numpy.uint8)
    if array.dtype.kind == "f" and not numpy.isfinite(array).all():
        raise invalid_argument(
            "image", "float pixel values must be finite: the image has NaN or inf"
        )
    low, high = array.min(), array.max()
    if array.dtype.kind == "f" and (low < 0 or high > 1):
        warnings.warn(
            f"float pixel values out of [0.0, 1.0] (found {low} to {high}); "
            "rescaled to [0.0, 1.0] with min/max, as MLflow does",
            stacklevel=4,
        )
        # MLflow divides by zero here; a constant image becomes black instead.
        array = (array - low) / (high - low) if high > low else array * 0.0
    return (array * 255).astype(numpy.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
