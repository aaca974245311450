"""The fenced code blocks of README.md and docs/*.md, as test_docs.py runs them and
test_doc_shell_lines.py parses them: each with its file, the line of its opening fence,
its language and the flags written after it (`no-run`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import repo_root

NOT_RUN = "no-run"
PYTHON = {"python", "py", "python3"}
SHELL = {"sh", "bash", "shell"}
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


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
