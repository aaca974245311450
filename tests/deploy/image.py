"""The container image as the Dockerfile's final stage defines it: ENTRYPOINT, CMD,
ENV and USER, the parts that decide what a container runs, with which environment and
as whom."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from functools import cache

from tests.conftest import repo_root


@dataclass(frozen=True)
class Image:
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    user: str = "0:0"  # uid:gid


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of every line, continuation lines joined."""
    joined = text.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def _exec_form(arguments: str) -> list[str]:
    return json.loads(arguments) if arguments.startswith("[") else ["/bin/sh", "-c", arguments]


@cache
def image() -> Image:
    instructions = _instructions((repo_root() / "Dockerfile").read_text())
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    entrypoint: list[str] = []
    cmd: list[str] = []
    env: dict[str, str] = {}
    user = "0:0"
    for word, arguments in instructions[last_from + 1 :]:
        if word == "ENTRYPOINT":
            entrypoint = _exec_form(arguments)
        elif word == "CMD":
            cmd = _exec_form(arguments)
        elif word == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(arguments))  # type: ignore[misc]
        elif word == "USER":
            user = arguments
    return Image(entrypoint, cmd, env, user)
