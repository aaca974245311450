"""`make run` installs what serving needs and none of the development tools.

The extras it installs are read from the Makefile's own recipe; what they pull in is the
transitive closure of their requirements, from pyproject.toml for Cairn and from the
installed distributions' metadata below it (the test environment has every one of them).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
SERVING_NEEDS = {
    "asyncpg",
    "grpcio",
    "grpcio-health-checking",
    "grpcio-reflection",
    "grpcio-status",
    "pgserver",
    "protobuf",
    "structlog",
    "uvloop",
}


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def makefile_rule(target: str) -> tuple[list[str], list[str]]:
    """The prerequisites and the recipe lines of target's rule in the Makefile."""
    lines = (REPO / "Makefile").read_text().splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith(f"{target}:")]
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return lines[start].split(":", 1)[1].split(), recipe


def run_install_arguments() -> list[str]:
    """What the run stamp's one `pip install` (besides upgrading pip) is given to install."""
    _, recipe = makefile_rule("$(RUN_STAMP)")
    installs = [line for line in recipe if "pip install" in line and "--upgrade pip" not in line]
    assert len(installs) == 1, installs
    words = shlex.split(installs[0].split("pip install", 1)[1])
    options_with_values = {"-c", "--constraint"}
    return [
        word
        for i, word in enumerate(words)
        if not word.startswith("-") and (i == 0 or words[i - 1] not in options_with_values)
    ]


def run_extras() -> set[str]:
    (project,) = run_install_arguments()
    match = re.fullmatch(r"\.(?:\[([\w,\s-]*)\])?", project)
    assert match, f"make run installs {project!r}, not the project with extras"
    return {extra.strip() for extra in (match.group(1) or "").split(",") if extra.strip()}


def wanted(requirements: Iterable[str], extras: set[str]) -> list[Requirement]:
    """The requirements that apply when these extras are asked for (and none otherwise)."""
    chosen = []
    for requirement in map(Requirement, requirements):
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": e}) for e in extras | {""}):
            chosen.append(requirement)
    return chosen


def closure(extras: set[str]) -> dict[str, str]:
    """Every distribution installing Cairn with extras brings, to the one that asked for it."""
    cairn = project()
    requirements = list(cairn["dependencies"])
    for extra in extras:
        requirements += cairn["optional-dependencies"][extra]
    pending = [("cairn", requirement) for requirement in wanted(requirements, set())]
    found: dict[str, str] = {}
    walked: set[tuple[str, frozenset[str]]] = set()  # moto and moto[server] differ
    while pending:
        parent, requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name == "cairn":  # an extra naming others of Cairn's extras
            pending += [("cairn", r) for r in wanted(_extras_of_cairn(cairn, requirement), set())]
            continue
        if (name, frozenset(requirement.extras)) in walked:
            continue
        walked.add((name, frozenset(requirement.extras)))
        found.setdefault(name, parent)
        below = metadata.distribution(name).requires or []
        pending += [(name, r) for r in wanted(below, set(requirement.extras))]
    return found


def _extras_of_cairn(cairn: dict, requirement: Requirement) -> list[str]:
    return [r for extra in requirement.extras for r in cairn["optional-dependencies"][extra]]


def development_tools() -> set[str]:
    """The dev extra's own requirements, not the other extras it includes."""
    dev = project()["optional-dependencies"]["dev"]
    names: set[str] = {canonicalize_name(Requirement(r).name) for r in dev}
    return names - {"cairn"}


def test_make_run_depends_on_the_run_stamp_not_the_development_one() -> None:
    prerequisites, recipe = makefile_rule("run")
    assert prerequisites == ["$(RUN_STAMP)"]
    assert any("cairn serve" in line for line in recipe), recipe


def test_make_run_installs_what_serving_needs() -> None:
    assert run_extras() == {"server", "embedded"}
    missing = SERVING_NEEDS - closure(run_extras()).keys()
    assert not missing, f"make run would not install {sorted(missing)}"


def test_make_run_installs_no_development_tool() -> None:
    tools = development_tools()
    assert {"pytest", "mypy", "ruff", "moto", "grpcio-tools", "buf-bin"} <= tools
    brought = closure(run_extras())
    leaked = {tool: brought[tool] for tool in tools & brought.keys()}
    assert not leaked, f"make run installs development tools (tool: required by): {leaked}"


def test_the_closure_sees_tools_the_development_environment_brings() -> None:
    """The same walk over `.[dev]` finds the tools, also those only required below them
    (pytest-asyncio requires pytest), so an empty answer above is not a blind spot."""
    brought = closure({"dev"})
    assert development_tools() <= brought.keys()
    assert brought["pytest"] in {"cairn", "pytest-asyncio", "pytest-xdist"}
    assert brought["iniconfig"] == "pytest"
