"""Progress of transfers through the real artifact service: a bar with size, rate and
time on a terminal, one line elsewhere, one bar per tree, a callable's (done, total)."""

import asyncio
import io
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console
from rich.filesize import decimal

import cairn
from tests.conftest import new_project

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TIME = r"\d:\d\d:\d\d"
RATE = r"\d+(\.\d)? [kMG]?B/s"
# Three files of a tree, of sizes that cross chunk boundaries; one is empty.
TREE = {"weights.bin": 2 * 2**20 + 17, "sub/config.json": 300_001, "sub/empty": 0}


@pytest.fixture
async def store(server_port: int, unique: str) -> AsyncIterator[cairn.ArtifactClient]:
    project = await new_project(server_port, f"p-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project, timeout=None
    ) as client:
        yield client


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for relative, size in TREE.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(os.urandom(size))
    return root


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=140), out


def final_frame(output: str, lines: int = 1) -> list[str]:
    """The lines the bars show last: each frame is drawn over the one before. (What the
    process prints meanwhile, the in-process server's log here, is shown above them.)"""
    segments = [s.strip() for s in re.split(r"[\r\n]", ANSI.sub("", output)) if "━" in s]
    return segments[-lines:]


def bar_lines(output: str) -> list[str]:
    """The lines of bars left on the screen once every frame is drawn: on each line,
    what follows its last carriage return."""
    shown = [ANSI.sub("", line.rsplit("\r", 1)[-1]) for line in output.split("\n")]
    return [line.strip() for line in shown if "━" in line]


def of_total(total: int) -> str:
    """How a bar shows a transfer done: "5.2/5.2 MB"."""
    number, unit = decimal(total).split()
    return f"{number}/{number} {unit}"


class Calls:
    """A progress callable that keeps what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))

    def assert_counts_up_to(self, total: int) -> None:
        dones = [done for done, _ in self.calls]
        assert dones == sorted(dones), self.calls
        assert self.calls[0] == (0, total)
        assert self.calls[-1] == (total, total)
        assert {t for _, t in self.calls} == {total}


async def test_a_terminal_shows_a_bar_with_size_rate_and_time_that_ends_full(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    local = tmp_path / "model.onnx"
    local.write_bytes(os.urandom(5 * 2**20 + 3))
    size = of_total(local.stat().st_size)
    console, out = terminal()
    await store.upload("models/model.onnx", local, progress=console)
    [line] = final_frame(out.getvalue())
    assert re.fullmatch(rf"upload models/model\.onnx ━+ 100% {size} {RATE} {TIME}", line.strip()), (
        line
    )

    console, out = terminal()
    await store.download("models/model.onnx", tmp_path / "back.onnx", progress=console)
    [line] = final_frame(out.getvalue())
    assert re.fullmatch(
        rf"download models/model\.onnx ━+ 100% {size} {RATE} {TIME}", line.strip()
    ), line
    assert (tmp_path / "back.onnx").read_bytes() == local.read_bytes()


async def test_a_file_or_pipe_gets_one_line_without_carriage_returns(
    store: cairn.ArtifactClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = tmp_path / "data.bin"
    local.write_bytes(os.urandom(3 * 2**20))
    out = io.StringIO()
    await store.upload("data.bin", local, progress=Console(file=out, width=80))
    # A long path stays on its one line.
    long_path = "a-rather-long-directory-name/" * 4 + "data.bin"
    await store.upload(long_path, local, progress=Console(file=out, width=80))
    text = out.getvalue()
    assert "\r" not in text
    first, second = text.splitlines()
    assert re.fullmatch(rf"upload data\.bin: 3\.1 MB in [\d.]+ s \({RATE}\)", first), first
    assert second.startswith(f"upload {long_path}: 3.1 MB in ")

    # progress=True writes to stderr, which is not a terminal here (captured).
    assert not sys.stderr.isatty()
    capsys.readouterr()
    await store.download("data.bin", tmp_path / "again.bin", progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert re.fullmatch(rf"download data\.bin: 3\.1 MB in [\d.]+ s \({RATE}\)\n", err), err


async def test_a_tree_is_one_bar_whose_total_is_the_size_of_its_files(
    store: cairn.ArtifactClient, tree: Path, tmp_path: Path
) -> None:
    total = sum(TREE.values())
    console, out = terminal()
    stored = await store.upload_tree("trees/t", tree, progress=console)
    assert sorted(info.path for info in stored) == sorted(f"trees/t/{p}" for p in TREE)
    [line] = bar_lines(out.getvalue())  # one bar, however many files
    assert re.fullmatch(
        rf"upload trees/t/ \(3 files\) ━+ 100% {of_total(total)} {RATE} {TIME}", line
    ), line

    calls = Calls()
    await store.upload_tree("trees/u", tree, progress=calls)
    calls.assert_counts_up_to(total)

    console, out = terminal()
    await store.download("trees/t", tmp_path / "down", progress=console)
    [line] = bar_lines(out.getvalue())
    assert re.fullmatch(
        rf"download trees/t/ \(3 files\) ━+ 100% {of_total(total)} {RATE} {TIME}", line
    ), line
    for relative in TREE:
        assert (tmp_path / "down" / relative).read_bytes() == (tree / relative).read_bytes()

    calls = Calls()
    await store.download("trees/u", tmp_path / "down-u", progress=calls)
    calls.assert_counts_up_to(total)


async def test_a_callable_counts_up_to_the_total(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    data = os.urandom(3 * 2**20 + 11)
    calls = Calls()
    await store.upload("c.bin", data, progress=calls)
    calls.assert_counts_up_to(len(data))
    assert len(calls.calls) >= 4  # the start, then every chunk

    calls = Calls()
    await store.download("c.bin", tmp_path / "c.bin", progress=calls)
    calls.assert_counts_up_to(len(data))

    # A file object's size is unknown until it is read: 0 until then, exact at the end.
    calls = Calls()
    await store.upload("d.bin", io.BytesIO(data), progress=calls)
    assert calls.calls[0] == (0, 0) and calls.calls[-1] == (len(data), len(data))
    dones = [done for done, _ in calls.calls]
    assert dones == sorted(dones)


async def test_transfers_at_once_share_one_display(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    """rich draws one live display per console: two transfers at once are two bars of it."""
    console, out = terminal()
    await asyncio.gather(
        store.upload("x.bin", os.urandom(2**20), progress=console),
        store.upload("y.bin", os.urandom(2**21), progress=console),
    )
    lines = final_frame(out.getvalue(), 2)
    assert sorted(line.split()[1] for line in lines) == ["x.bin", "y.bin"]
    assert all(" 100% " in line for line in lines), lines


async def test_a_failed_transfer_prints_no_summary(
    store: cairn.ArtifactClient, tmp_path: Path
) -> None:
    out = io.StringIO()
    await store.upload("taken.bin", b"first")
    with pytest.raises(cairn.exceptions.AlreadyExistsError):
        await store.upload("taken.bin", b"second", progress=Console(file=out))
    with pytest.raises(cairn.exceptions.NotFoundError):
        await store.download("missing", tmp_path / "m", progress=Console(file=out))
    assert out.getvalue() == ""
    # A bar of a failed transfer is let go of: the next one draws afresh.
    console, out = terminal()
    with pytest.raises(cairn.exceptions.AlreadyExistsError):
        await store.upload("taken.bin", b"third", progress=console)
    await store.upload("free.bin", b"fourth", progress=console)
    assert final_frame(out.getvalue())[0].split()[:3] == ["upload", "free.bin", "━" * 40]


async def test_run_artifacts_report_progress(
    server_port: int, unique: str, tree: Path, tmp_path: Path
) -> None:
    total = sum(TREE.values())
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        experiment_id = await tracking.create_experiment(f"progress-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id

        console, out = terminal()
        await tracking.log_artifacts(run_id, tree, "model", progress=console)
        [line] = bar_lines(out.getvalue())
        assert re.fullmatch(
            rf"upload ….*/model/ \(3 files\) ━+ 100% {of_total(total)} {RATE} {TIME}", line
        ), line

        calls = Calls()
        await tracking.log_artifact(run_id, tree / "weights.bin", "one", progress=calls)
        calls.assert_counts_up_to(TREE["weights.bin"])

        calls = Calls()
        await tracking.download_artifacts(run_id, "model", tmp_path / "d", progress=calls)
        calls.assert_counts_up_to(total)

        console, out = terminal()
        await tracking.download_artifacts(
            run_id, "one/weights.bin", tmp_path / "w", progress=console
        )
        [line] = bar_lines(out.getvalue())
        size = of_total(TREE["weights.bin"])
        assert re.fullmatch(rf"download …\S*/one/weights\.bin ━+ 100% {size} .*", line), line

        # Through a URI, to a file: one line.
        out = io.StringIO()
        await tracking.download_artifacts(
            f"runs:/{run_id}/model", tmp_path / "u", progress=Console(file=out)
        )
        assert re.fullmatch(
            r"download \S+/model/ \(3 files\): 2\.4 MB in \S+ s \(.*\)\n", out.getvalue()
        )


async def test_models_and_versioned_artifacts_report_progress(
    server_port: int, unique: str, tree: Path, tmp_path: Path
) -> None:
    total = sum(TREE.values())
    async with (
        cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking,
        cairn.ModelRegistryAPIClient.insecure_connection("127.0.0.1", server_port) as registry,
    ):
        experiment_id = await tracking.create_experiment(f"progress-models-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id

        # The model's files and then its manifest, as one transfer.
        calls = Calls()
        info = await tracking.log_model(run_id, tree, "m", flavor="files", progress=calls)
        logged = calls.calls[0][1]
        assert logged > total  # the manifest too
        calls.assert_counts_up_to(logged)

        calls = Calls()
        cache = tmp_path / "cache"
        await tracking.load_model(info.model_uri, cache_dir=cache, progress=calls)
        calls.assert_counts_up_to(total)
        calls = Calls()
        await tracking.load_model(info.model_uri, cache_dir=cache, progress=calls)
        assert calls.calls == []  # from the cache: nothing moves

        calls = Calls()
        version = await registry.create_artifact(
            f"rows-{unique}", "dataset", files=tree, progress=calls
        )
        calls.assert_counts_up_to(total)
        calls = Calls()
        await version.download(tmp_path / "v", progress=calls)
        calls.assert_counts_up_to(total)
        assert (tmp_path / "v" / "tree" / "weights.bin").read_bytes() == (
            tree / "weights.bin"
        ).read_bytes()


SCRIPT = """
import asyncio, sys
import cairn

async def main():
    port, project, local = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", port, project=project
    ) as store:
        await store.upload(sys.argv[4], local, progress=True)

asyncio.run(main())
"""


async def _run_script(arguments: list[str], stderr: int) -> int:
    # Neither a setting of the caller's terminal nor of CI decides what rich draws here.
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    }
    environment.update(TERM="xterm-256color", COLUMNS="120")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRIPT, *arguments, stderr=stderr, env=environment
    )
    return await process.wait()


async def test_progress_true_draws_on_a_terminal_and_writes_one_line_to_a_file(
    store: cairn.ArtifactClient, tmp_path: Path, server_port: int
) -> None:
    """`progress=True` in a script: stderr a pseudo-terminal, then a file."""
    import pty

    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(4 * 2**20))
    arguments = [str(server_port), store.project, str(local)]
    leader, follower = pty.openpty()
    try:
        reading = asyncio.ensure_future(asyncio.to_thread(_read_all, leader))
        code = await _run_script([*arguments, "on-a-terminal.bin"], follower)
        os.close(follower)
        follower = -1
        drawn = await reading
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert code == 0
    [line] = bar_lines(drawn.replace("\r\n", "\n"))
    assert re.fullmatch(
        rf"upload on-a-terminal\.bin ━+ 100% {of_total(4 * 2**20)} {RATE} {TIME}", line
    ), line

    log = tmp_path / "stderr.log"
    with log.open("w") as file:
        assert await _run_script([*arguments, "to-a-file.bin"], file.fileno()) == 0
    written = log.read_text()
    assert "\r" not in written and "\x1b" not in written
    assert re.fullmatch(rf"upload to-a-file\.bin: 4\.2 MB in \S+ s \({RATE}\)\n", written)


def _read_all(leader: int) -> str:
    """Everything written to the pseudo-terminal until its last writer closed it."""
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: no writer is left
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()
