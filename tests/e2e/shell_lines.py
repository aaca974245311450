"""The lines of a shell block as bash reads them, closely enough to find each `cairn`
command in them, and the parse of such a command by the command's own click tree
without running it. shlex reads the words, once what it does not read as the shell
does (backquotes, `2>`) is rewritten; a here-document's body is data, not lines."""

from __future__ import annotations

import contextlib
import itertools
import re
import shlex
from collections.abc import Iterator

import click

from tests.e2e.doc_blocks import Block, shell_blocks

# Shell operators as shlex reads them, runs of these characters: one that opens a
# parenthesis starts a command (`$(`, `<(`), one with < or > redirects to the word after
# it, and the others (`|`, `&&`, `;`, `)`) end the command before them.
OPERATOR = re.compile(r"[();<>|&]+")
ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=")
# A comment, from a `#` that starts a word to the end of its line.
COMMENT = re.compile(r"(^|\s)#.*")
# What shlex does not read as the shell does, outside single quotes: a backquoted command
# (rewritten `$(...)`, which a word may hold), and the number of a file descriptor joined
# to a redirection, `2>` or `0<` (dropped, or shlex would make `2` an argument).
NOT_AS_SHLEX_READS = re.compile(r"'[^']*'|`(?P<backquoted>[^`]*)`|(?<![^\s;&|(])\d+(?=[<>])")
# Words that may come before a command's name.
KEYWORDS = {"{", "!", "if", "elif", "then", "else", "while", "until", "do"}
# Commands that run the command named after their own options and assignments, with the
# options that take a value (`sudo -u ops cairn`, `xargs -n 1 cairn`).
WRAPPERS = {
    "command": set(),
    "env": {"-u", "-C", "-S"},
    "exec": {"-a"},
    "nohup": set(),
    "sudo": {"-C", "-D", "-g", "-h", "-p", "-r", "-t", "-U", "-u"},
    "time": set(),
    "xargs": {"-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s"},
}


class UnendedLine(Exception):
    """A block ended inside a line: a quote or a here-document never closed."""


def command_lines(block: Block) -> Iterator[tuple[range, list[str]]]:
    """The words of each line of the block, comments left out, with the numbers in its
    file of the lines it spans: a line ended by `\\`, or with a quote still open, goes on
    on the next. A here-document's body, from `<<WORD` to the line WORD, is data, not
    lines; a block that ends inside a line raises UnendedLine naming it."""
    pending: list[str] = []
    heredocs: list[tuple[str, bool]] = []
    first = block.line + 1
    for number, line in enumerate(block.code.splitlines(), start=block.line + 1):
        if heredocs:
            delimiter, tabbed = heredocs[0]
            if (line.lstrip("\t") if tabbed else line) == delimiter:
                heredocs.pop(0)
            continue
        if not pending:
            first = number
        pending.append(line)
        words = line_words("\n".join(pending))
        if words is not None:
            yield range(first, number + 1), words
            heredocs, pending = _heredocs(words), []
    if pending or heredocs:
        raise UnendedLine(f"{block.path}:{first}: a quote or here-document never closes")


def line_words(text: str) -> list[str] | None:
    """The words of a line as shlex reads them once it reads them as the shell does, or
    None while the line goes on: it ends in `\\` or a quote is still open."""
    text = NOT_AS_SHLEX_READS.sub(_as_shlex_reads, text.replace("\\\n", " "))
    if text.endswith("\\"):
        return None
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # No closing quotation
        return None


def _as_shlex_reads(match: re.Match[str]) -> str:
    if match["backquoted"] is not None:
        return f"$({match['backquoted']})"
    return match[0] if match[0].startswith("'") else ""


def _heredocs(words: list[str]) -> list[tuple[str, bool]]:
    """The here-documents a line opens, in the order their bodies follow it: each one's
    closing word, and whether tabs may indent it (`<<-WORD`)."""
    found = [word for operator, word in itertools.pairwise(words) if operator == "<<"]
    return [(word[1:], True) if word.startswith("-") else (word, False) for word in found]


def substitutions(word: str) -> Iterator[str]:
    """The text of each `$(...)` of a word, a command line of its own: shlex keeps
    `"$(cairn ...)"` one word."""
    start = word.find("$(")
    while start >= 0:
        depth = 0
        for end in range(start + 2, len(word)):
            depth += {"(": 1, ")": -1}.get(word[end], 0)
            if depth < 0:
                break
        else:
            end = len(word)
        yield word[start + 2 : end]
        start = word.find("$(", end)


def simple_commands(words: list[str]) -> Iterator[list[str]]:
    """The words of each command of a line (`a | b && c > out` is a, b and c), and of
    each command a word of it substitutes."""
    command: list[str] = []
    redirected = False
    for word in words:
        for text in substitutions(word):
            yield from simple_commands(line_words(text) or [])
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
    """The command from its name on: keywords, variable assignments and the commands
    that run it (`sudo`, `env`, `xargs` ...) with their options left out."""
    options: set[str] | None = None  # those of the last command running the rest
    while command:
        word, skip = command[0], 1
        if word in WRAPPERS:
            options = WRAPPERS[word]
        elif options is not None and word.startswith("-"):
            skip = 2 if word in options else 1  # the option, and its value if it takes one
        elif not (word in KEYWORDS or ASSIGNMENT.match(word)):
            break
        command = command[skip:]
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
        with contextlib.suppress(UnendedLine):  # test_shell_block_lines_end names it
            for numbers, words in command_lines(block):
                for arguments in cairn_arguments(words):
                    found.append((f"{block.path}:{numbers[0]}", arguments))
    return found


def parse_cairn(arguments: list[str]) -> None:
    """Parses `cairn arguments` with the command's own click tree down to the command
    they name, without running it: click's usage error for an unknown command or
    option, a missing argument or a missing required option, as the command exits 2."""
    from cairn.cli._root import cli

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


def _naming_a_command() -> re.Pattern[str]:
    """`cairn` (or `.../cairn`) then one of the command's own top-level commands."""
    from cairn.cli._root import cli

    names = "|".join(map(re.escape, cli.commands))
    return re.compile(rf"(?<![\w.-])cairn\s+(?:{names})(?![\w.-])")


def unparsed_cairn_lines(block: Block) -> list[str]:
    """The lines of a block that show `cairn` and one of its commands, comments aside,
    more often than the parser finds `cairn` commands in them."""
    naming = _naming_a_command()
    lines = enumerate(block.code.splitlines(), start=block.line + 1)
    text = {number: COMMENT.sub("", line) for number, line in lines}
    missed = []
    with contextlib.suppress(UnendedLine):  # test_shell_block_lines_end names it
        for numbers, words in command_lines(block):
            shown = [n for n in numbers for _ in naming.finditer(text[n])]
            if len(list(cairn_arguments(words))) < len(shown):
                missed.append(f"{block.path}:{shown[0]}: {text[shown[0]].strip()}")
    return missed


def cli_commands(
    command: click.Command, path: str = "cairn"
) -> Iterator[tuple[str, click.Command]]:
    """Each command of the click tree under command, by what one types to run it
    (`cairn runs list`)."""
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from cli_commands(sub, f"{path} {name}")
    else:
        yield path, command
