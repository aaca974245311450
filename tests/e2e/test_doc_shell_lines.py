"""Every shell block of README.md and docs/*.md is valid shell, and each `cairn` command
in one parses as the command would parse it, though the blocks of docs/ are not run. The
convention is in docs/development.md ("Examples in the docs")."""

from __future__ import annotations

import shlex
import subprocess

import click
import pytest

from tests.e2e.doc_blocks import Block, shell_blocks
from tests.e2e.shell_lines import (
    UnendedLine,
    cairn_arguments,
    cairn_lines,
    cli_commands,
    command_lines,
    parse_cairn,
    unparsed_cairn_lines,
)


@pytest.mark.parametrize("block", shell_blocks(), ids=str)
def test_shell_block_is_valid_shell(block: Block) -> None:
    """Every shell block of README.md and docs/, run or not, is shell bash can read. The
    blocks of docs/ were never checked, and `cairn operations get operations/<uuid>`
    was a redirection from a file `uuid` with nothing after `>`: a syntax error."""
    result = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
    assert result.returncode == 0, f"{block}: {result.stderr}"


@pytest.fixture
def files_not_looked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's paths taken as given: `upload` wants its LOCAL_PATH to exist, and
    the docs' `model.onnx` and `data/` are the reader's."""
    from cairn.cli._root import cli

    for _, command in cli_commands(cli):
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


@pytest.mark.parametrize("block", shell_blocks(), ids=str)
def test_shell_block_lines_end(block: Block) -> None:
    """Each line of a shell block ends in it, as the parser reads it. Before, the
    apostrophe of `it's` in a here-document's body opened a quote to the block's end, and
    every `cairn` command after it went unparsed without a word."""
    try:
        list(command_lines(block))
    except UnendedLine as unended:
        pytest.fail(str(unended))


@pytest.mark.parametrize("block", shell_blocks(), ids=str)
def test_every_cairn_line_is_parsed(block: Block) -> None:
    """A line of a shell block that shows `cairn` and one of its commands gives the
    parser a `cairn` command, one for each it shows; a form the parser does not know
    fails here instead of going unchecked. Before, `id="$(cairn ...)"`, backquotes,
    `if cairn ...`, `sudo cairn ...`, `xargs cairn ...` and the lines after an open quote
    gave none, and nothing said so."""
    missed = unparsed_cairn_lines(block)
    assert not missed, "cairn commands the parser did not find:\n" + "\n".join(missed)


def test_a_form_the_parser_does_not_know_is_named() -> None:
    """`docker compose exec SERVICE cairn ...` is such a form: the cross-check names its
    line, and only its line."""
    code = (
        "cairn gc  # or cairn sync\n"
        "docker compose exec registry cairn keys create \\\n  --admin\n"
        "# cairn gc\n"
    )
    block = Block("doc.md", 10, "sh", frozenset(), code)
    assert unparsed_cairn_lines(block) == [
        "doc.md:12: docker compose exec registry cairn keys create \\"
    ]


def _parsed(code: str) -> list[list[str]]:
    block = Block("doc.md", 10, "sh", frozenset(), code)
    return [arguments for _, words in command_lines(block) for arguments in cairn_arguments(words)]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ('id="$(cairn experiments create x)"', [["experiments", "create", "x"]]),
        ("id=$(cairn experiments create x)", [["experiments", "create", "x"]]),
        (
            """echo "$(cairn runs list --filter 'a=(1)') and $(cairn gc)\"""",
            [["runs", "list", "--filter", "a=(1)"], ["gc"]],
        ),
        ("id=`cairn experiments list`", [["experiments", "list"]]),
        ('echo "`cairn runs list`"', [["runs", "list"]]),
        ("if cairn runs list; then cairn gc; fi", [["runs", "list"], ["gc"]]),
        ("elif ! cairn runs list; then", [["runs", "list"]]),
        ("while cairn operations get X; do sleep 1; done", [["operations", "get", "X"]]),
        ("until cairn operations get X; do :; done", [["operations", "get", "X"]]),
        ("sudo cairn migrate", [["migrate"]]),
        ("sudo -u ops -E cairn migrate", [["migrate"]]),
        ("env CAIRN_ADDRESS=h:1 cairn runs list", [["runs", "list"]]),
        ("env -i -u HOME K=v cairn runs list", [["runs", "list"]]),
        ("cat ids | xargs cairn runs describe", [["runs", "describe"]]),
        ("xargs -n 1 -P4 cairn runs describe < ids", [["runs", "describe"]]),
        ("xargs -I {} cairn runs describe {}", [["runs", "describe", "{}"]]),
        ("nohup cairn serve all &", [["serve", "all"]]),
        ("exec cairn serve all", [["serve", "all"]]),
        ("command cairn runs list", [["runs", "list"]]),
        ("time -p cairn runs list", [["runs", "list"]]),
        ("K=v cairn runs list && { cairn gc; }", [["runs", "list"], ["gc"]]),
        ("kubectl exec deploy/x -- cairn keys create", [["keys", "create"]]),
        ("cairn experiments list 2>/dev/null", [["experiments", "list"]]),
        ("cairn runs list >out 2>&1 | cat", [["runs", "list"]]),
        ("cairn runs list &>out 2>>log >&2 0<in", [["runs", "list"]]),
        ("cairn runs list --max-results 2 > out", [["runs", "list", "--max-results", "2"]]),
        ("cairn runs list --filter 'x 2>1'", [["runs", "list", "--filter", "x 2>1"]]),
        ("cairn runs list \\\n  --experiment churn", [["runs", "list", "--experiment", "churn"]]),
        ("echo 'a\ncairn runs' && cairn gc", [["gc"]]),
        ("cat <<EOF\nit's\ncairn runs list\nEOF\ncairn gc", [["gc"]]),
        ("cat <<'EOF' > f\ncairn runs list\nEOF\ncairn gc", [["gc"]]),
        ("cat <<-EOF\n\tcairn runs list\n\tEOF\ncairn gc", [["gc"]]),
        ("# cairn runs list\ncairn gc  # or cairn sync", [["gc"]]),
    ],
)
def test_the_parser_finds_the_cairn_commands(code: str, expected: list[list[str]]) -> None:
    """The parser's pieces together: each `cairn` command a line runs, with the
    arguments the command gets. Before, substitutions in quotes and backquotes, `if`,
    `while`, `sudo`, `env`, `xargs` and the like hid the command, `2>/dev/null` gave it
    an argument `2`, and a here-document's body was read as commands."""
    assert _parsed(code + "\n") == expected


@pytest.mark.parametrize(
    "code", ["cairn gc\necho 'it\ncairn runs list\n", "cairn gc\ncat <<EOF\ncairn runs list\n"]
)
def test_the_parser_names_a_line_that_never_ends(code: str) -> None:
    """A quote or here-document still open when the block ends is an error naming the
    line that opened it (line 12 of the doc: the fence is line 10), not the silent end
    of the parsed lines."""
    with pytest.raises(UnendedLine, match=r"^doc\.md:12: "):
        _parsed(code)
