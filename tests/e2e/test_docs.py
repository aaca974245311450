"""Every ```python block of README.md and docs/*.md runs as written, as a script of its
own, against a served instance set up as `make run` sets it up; so do README's shell
blocks, and the blocks not run are still valid. Each option of each `cairn` command shows
in docs/cli.md. The convention is in docs/development.md ("Examples in the docs")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from tests.conftest import repo_root
from tests.e2e.conftest import BIN, ServerProcess, served_with_keys
from tests.e2e.doc_blocks import (
    NOT_RUN,
    PYTHON,
    Block,
    all_blocks,
    checked_blocks,
    python_blocks,
    readme_shell_blocks,
)
from tests.e2e.shell_lines import cli_commands

# Blocks marked no-run are only compiled, so nothing shows they work: keep them few.
MAX_NOT_RUN = 3
KEY = "CAIRN_API_KEY"  # the variable the examples, like the `cairn` command, read a key from
SCRIPT_TIMEOUT = 90.0  # seconds; a block importing scikit-learn takes a few on a busy machine
# make run's address as the docs write it: "127.0.0.1:50051" or ("127.0.0.1", 50051).
MAKE_RUN_ADDRESS = re.compile(r"127\.0\.0\.1(?P<between>:|[\"'],\s*)50051\b")


def pointed_at(code: str, address: str) -> str:
    """The block with make run's address replaced by the test server's."""
    host, port = address.rsplit(":", 1)
    rewritten = MAKE_RUN_ADDRESS.sub(lambda match: f"{host}{match['between']}{port}", code)
    assert "50051" not in rewritten, (
        "write make run's address as 127.0.0.1:50051 or ('127.0.0.1', 50051), "
        "so the test can point the block at its server"
    )
    return rewritten


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh current directory with `.venv` (the one running the tests) in it, as in a
    checkout after `make run`."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "home").mkdir()
    return tmp_path


def script_environment(workdir: Path) -> dict[str, str]:
    """The caller's environment without the virtual environment on PATH (the docs must
    say how to get there), a home of its own (profiles, caches, journals) and no CAIRN_*
    settings of the machine running the tests."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CAIRN_", "XDG_", "VIRTUAL_ENV"))
    }
    path = [entry for entry in inherited.get("PATH", "").split(os.pathsep) if Path(entry) != BIN]
    return {**inherited, "HOME": str(workdir / "home"), "PATH": os.pathsep.join(path)}


def run_script(
    argv: list[str], block: Block, workdir: Path, env: dict[str, str] | None = None
) -> None:
    try:
        result = subprocess.run(
            argv,
            cwd=workdir,
            env={**script_environment(workdir), **(env or {})},
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
        )
    except subprocess.TimeoutExpired as timeout:
        # Bytes whatever text= says: run() raises with what it read, undecoded.
        stderr = (timeout.stderr or b"").decode(errors="replace")
        pytest.fail(f"{block} did not finish in {SCRIPT_TIMEOUT:.0f} s:\n{stderr}")
    if result.returncode != 0:
        pytest.fail(f"{block} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")


@pytest.mark.e2e
@pytest.mark.parametrize("block", [b for b in python_blocks() if b.runs], ids=str)
def test_python_block_runs(block: Block, served: ServerProcess, workdir: Path) -> None:
    script = workdir / "example.py"
    script.write_text(pointed_at(block.code, served.address))
    run_script([sys.executable, str(script)], block, workdir)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A server that requires API keys, and the admin key README's bootstrap makes."""
    with served_with_keys(tmp_path_factory.mktemp("keyed"), expires="1y") as keyed:
        yield keyed


@pytest.mark.e2e
@pytest.mark.parametrize("block", [b for b in python_blocks() if b.runs and KEY in b.code], ids=str)
def test_python_block_runs_with_keys_required(
    block: Block, keyed: tuple[ServerProcess, str], workdir: Path
) -> None:
    """A block that reads an API key from CAIRN_API_KEY also runs against a server that
    requires keys, given the admin key; with authentication off any key passes, so
    only this shows the example would work for real."""
    server, admin_key = keyed
    script = workdir / "example.py"
    script.write_text(pointed_at(block.code, server.address))
    run_script([sys.executable, str(script)], block, workdir, env={KEY: admin_key})


@pytest.mark.e2e
@pytest.mark.parametrize("block", [b for b in readme_shell_blocks() if b.runs], ids=str)
def test_readme_shell_block_runs(block: Block, served: ServerProcess, workdir: Path) -> None:
    """Run from a directory holding `.venv`, as a reader would from the checkout, with
    make run's services already serving. The `cairn` command reaches 127.0.0.1:50051
    unless told otherwise; CAIRN_ADDRESS tells it where the test's server is."""
    script = workdir / "example.sh"
    script.write_text(pointed_at(block.code, served.address))
    bash = ["bash", "-e", "-o", "pipefail", str(script)]
    run_script(bash, block, workdir, env={"CAIRN_ADDRESS": served.address})


@pytest.mark.parametrize("block", [b for b in checked_blocks() if not b.runs], ids=str)
def test_block_not_run_is_still_valid(block: Block) -> None:
    if block.language in PYTHON:
        compile(block.code, str(block), "exec")
    else:
        result = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
        assert result.returncode == 0, f"{block}: {result.stderr}"


def test_blocks_not_run_stay_few() -> None:
    not_run = [str(block) for block in checked_blocks() if not block.runs]
    assert len(not_run) <= MAX_NOT_RUN, f"more blocks marked {NOT_RUN} than allowed: {not_run}"


def test_blocks_carry_only_known_flags() -> None:
    """A misspelt marker would make a block run that its author meant to skip, or the
    reverse; either way say so here rather than in a puzzling failure."""
    unknown = {str(block): block.flags - {NOT_RUN} for block in all_blocks()}
    assert not {name: flags for name, flags in unknown.items() if flags}


def test_the_examples_are_found() -> None:
    """The README's client example is among the blocks run, so a parser that finds
    nothing cannot pass."""
    readme = [block for block in python_blocks() if block.path == "README.md" and block.runs]
    assert readme and "TrackingClient" in readme[0].code


def _lines_naming(doc: str, command: str) -> list[str]:
    """The lines of doc that show command, a line ended by `\\` joined to the next."""
    joined = doc.replace("\\\n", " ").splitlines()
    return [line for line in joined if re.search(rf"{re.escape(command)}(\s|$)", line)]


def test_every_command_flag_is_in_the_cli_docs() -> None:
    """Each option of each `cairn` command shows in docs/cli.md on a line of that
    command, by its long name or a short one, and its long name is written somewhere.
    The connection options have their own table and `--output` its section. Before,
    `experiments create --artifact-location`, `projects list --user` and `models
    versions --filter/--order-by/--max-results` were nowhere in the docs."""
    from cairn.cli._connection import connection_options
    from cairn.cli._root import cli

    doc = (repo_root() / "docs" / "cli.md").read_text()
    documented_elsewhere = {"--output", "--help"}
    for parameter in connection_options(lambda: None).__click_params__:  # type: ignore[attr-defined]
        documented_elsewhere.update(parameter.opts)
    missing = []
    for path, command in cli_commands(cli):
        lines = " ".join(_lines_naming(doc, path))
        for option in command.params:
            names = [*option.opts, *option.secondary_opts]
            if not isinstance(option, click.Option) or documented_elsewhere & set(names):
                continue
            shown = any(re.search(rf"{re.escape(name)}\b", lines) for name in names)
            long_names = [name for name in names if name.startswith("--")]
            if not shown or not any(name in doc for name in long_names):
                missing.append(f"{path} {'/'.join(names)}")
    assert not missing, missing
