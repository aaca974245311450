"""Every ```python block of README.md and docs/*.md runs as written, as a script of its
own, against a served instance set up as `make run` sets it up; so do README's shell
blocks. Every shell block is valid shell, and each `cairn` command in one parses as the
command would parse it. The convention is in docs/development.md ("Examples in the
docs")."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from tests.conftest import repo_root
from tests.e2e.conftest import BIN, ServerProcess, served_with_keys

NOT_RUN = "no-run"
# Blocks marked no-run are only compiled, so nothing shows they work: keep them few.
MAX_NOT_RUN = 3
PYTHON = {"python", "py", "python3"}
SHELL = {"sh", "bash", "shell"}
# Shell operators as shlex reads them, runs of these characters: one that opens a
# parenthesis starts a command (`$(`, `<(`), one with < or > redirects to the word after
# it, and the others (`|`, `&&`, `;`, `)`) end the command before them.
OPERATOR = re.compile(r"[();<>|&]+")
ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=")
# Words that may come before a command's name on its line.
BEFORE_COMMAND = {"{", "!", "then", "else", "do", "time"}
KEY = "CAIRN_API_KEY"  # the variable the examples, like the `cairn` command, read a key from
SCRIPT_TIMEOUT = 90.0  # seconds; a block importing scikit-learn takes a few on a busy machine

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
# make run's address as the docs write it: "127.0.0.1:50051" or ("127.0.0.1", 50051).
MAKE_RUN_ADDRESS = re.compile(r"127\.0\.0\.1(?P<between>:|[\"'],\s*)50051\b")


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository's root
    line: int  # of the opening fence
    language: str
    flags: frozenset[str]
    code: str

    @property
    def runs(self) -> bool:
        return NOT_RUN not in self.flags

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


def doc_files() -> list[Path]:
    return [repo_root() / "README.md", *sorted((repo_root() / "docs").glob("*.md"))]


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, in order."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    opening: re.Match[str] | None = None
    start, body = 0, list[str]()
    for number, line in enumerate(lines, start=1):
        match = FENCE.match(line)
        if opening is None:
            if match:
                opening, start, body = match, number, []
            continue
        if match and _closes(opening, match):
            found.append(_block(path, start, opening, body))
            opening = None
        else:
            body.append(line[len(opening["indent"]) :] if line.strip() else "")
    assert opening is None, f"{path.name}:{start}: a code block is never closed"
    return found


def _closes(opening: re.Match[str], match: re.Match[str]) -> bool:
    fence = match["fence"]
    return fence[0] == opening["fence"][0] and len(fence) >= len(opening["fence"])


def _block(path: Path, line: int, opening: re.Match[str], body: list[str]) -> Block:
    language, *flags = opening["info"].split() or [""]
    return Block(
        str(path.relative_to(repo_root())),
        line,
        language.lower(),
        frozenset(flags),
        "\n".join(body) + "\n",
    )


def all_blocks() -> list[Block]:
    return [block for path in doc_files() for block in fenced_blocks(path)]


def python_blocks() -> list[Block]:
    return [block for block in all_blocks() if block.language in PYTHON]


def readme_shell_blocks() -> list[Block]:
    readme = fenced_blocks(repo_root() / "README.md")
    return [block for block in readme if block.language in SHELL]


def shell_blocks() -> list[Block]:
    return [block for block in all_blocks() if block.language in SHELL]


def checked_blocks() -> list[Block]:
    return python_blocks() + readme_shell_blocks()


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


@pytest.mark.parametrize("block", shell_blocks(), ids=str)
def test_shell_block_is_valid_shell(block: Block) -> None:
    """Every shell block of README.md and docs/, run or not, is shell bash can read. The
    blocks of docs/ were never checked, and `cairn operations get operations/<uuid>`
    was a redirection from a file `uuid` with nothing after `>`: a syntax error."""
    result = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
    assert result.returncode == 0, f"{block}: {result.stderr}"


def command_lines(block: Block) -> Iterator[tuple[int, list[str]]]:
    """The words of each line of the block, comments left out, with the line's number in
    its file: a line ended by `\\`, or with a quote still open, goes on on the next."""
    pending: list[str] = []
    for index, line in enumerate(block.code.splitlines()):
        pending.append(line)
        text = "\n".join(pending).replace("\\\n", " ")
        if text.endswith("\\"):
            continue
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            words = list(lexer)
        except ValueError:  # No closing quotation
            continue
        yield block.line + 2 + index - len(pending), words
        pending = []


def simple_commands(words: list[str]) -> Iterator[list[str]]:
    """The words of each command of a line (`a | b && c > out` is a, b and c), without
    the variable assignments before them."""
    command: list[str] = []
    redirected = False
    for word in words:
        if redirected:  # the redirection's file, no argument
            redirected = False
        elif not OPERATOR.fullmatch(word):
            command.append(word)
        elif re.search("[<>]", word) and not word.endswith("("):
            redirected = True
        else:
            yield command
            command = []
    yield command


def _command_start(command: list[str]) -> list[str]:
    while command and (ASSIGNMENT.match(command[0]) or command[0] in BEFORE_COMMAND):
        command = command[1:]
    return command


def _names_cairn(word: str) -> bool:
    return word == "cairn" or word.endswith("/cairn")


def cairn_arguments(words: list[str]) -> Iterator[list[str]]:
    """The arguments of each `cairn` command of a line, at a command's start or after
    `--`, where `kubectl exec ... -- cairn keys create ...` runs it."""
    for command in map(_command_start, simple_commands(words)):
        if command and _names_cairn(command[0]):
            yield command[1:]
        elif "--" in command[:-1] and _names_cairn(command[command.index("--") + 1]):
            yield command[command.index("--") + 2 :]


def cairn_lines() -> list[tuple[str, list[str]]]:
    """Each `cairn` command of the shell blocks, as the file and line showing it and its
    arguments. Words the shell would substitute (`$id`, `"$KEY"`) stay as written: the
    command takes them for values, as it takes the docs' stand-ins, RUN or NAME."""
    found = []
    for block in shell_blocks():
        for number, words in command_lines(block):
            for arguments in cairn_arguments(words):
                found.append((f"{block.path}:{number}", arguments))
    return found


def parse_cairn(arguments: list[str]) -> None:
    """Parses `cairn arguments` with the command's own click tree down to the command
    they name, without running it: click's usage error for an unknown command or
    option, a missing argument or a missing required option, as the command exits 2."""
    from cairn.cli import cli

    command: click.Command = cli
    context = cli.make_context("cairn", list(arguments))
    while isinstance(command, click.Group):
        # Click 8 keeps the subcommand's name apart from its arguments; 9 will not.
        rest = [*getattr(context, "_protected_args", []), *context.args]
        if not rest:
            context.fail("Missing command.")
        name, found, rest = command.resolve_command(context, rest)
        assert name is not None and found is not None  # else resolve_command raised
        command = found
        context = command.make_context(name, rest, parent=context)


@pytest.fixture
def files_not_looked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's paths taken as given: `upload` wants its LOCAL_PATH to exist, and
    the docs' `model.onnx` and `data/` are the reader's."""
    from cairn.cli import cli

    for _, command in _cli_commands(cli):
        for parameter in command.params:
            if isinstance(parameter.type, click.Path):
                monkeypatch.setattr(parameter.type, "exists", False)


@pytest.mark.parametrize(
    ("where", "arguments"), [pytest.param(*line, id=line[0]) for line in cairn_lines()]
)
@pytest.mark.usefixtures("files_not_looked_for")
def test_cairn_line_parses(where: str, arguments: list[str]) -> None:
    """Each `cairn` command of a shell block is one the command would take, though the
    blocks of docs/ are not run. Before, in `cairn operations wait operations/<uuid>
    --max-wait 10m` the shell took `<uuid>` and `> --max-wait` for redirections, left
    `wait` an extra argument `10m`, and nothing said so."""
    try:
        parse_cairn(arguments)
    except click.exceptions.Exit as ending:  # --help and --version print and end here
        assert ending.exit_code == 0, f"{where}: cairn {shlex.join(arguments)}"
    except click.ClickException as mistake:
        pytest.fail(f"{where}: cairn {shlex.join(arguments)}: {mistake.format_message()}")


def test_the_cairn_lines_are_found() -> None:
    """docs/cli.md's listings, README's and the command `kubectl exec` runs in
    docs/deploy.md are among the lines parsed, so a parser that finds none cannot pass."""
    lines = cairn_lines()
    files = {where.rsplit(":", 1)[0] for where, _ in lines}
    commands = {" ".join(arguments[:2]) for _, arguments in lines}
    assert {"README.md", "docs/cli.md", "docs/deploy.md"} <= files
    assert {"experiments create", "keys create", "operations wait"} <= commands


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


def _cli_commands(
    command: click.Command, path: str = "cairn"
) -> Iterator[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _cli_commands(sub, f"{path} {name}")
    else:
        yield path, command


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
    from cairn.cli import cli
    from cairn.cli._connection import connection_options

    doc = (repo_root() / "docs" / "cli.md").read_text()
    documented_elsewhere = {"--output", "--help"}
    for parameter in connection_options(lambda: None).__click_params__:  # type: ignore[attr-defined]
        documented_elsewhere.update(parameter.opts)
    missing = []
    for path, command in _cli_commands(cli):
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
