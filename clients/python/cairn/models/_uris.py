"""The URIs a model or artifact can be named by, parsed exactly.

    models:/<name>/<version>      a version by number
    models:/<name>@<alias>        the version an alias points at
    models:/<name>/<stage>        the highest version in a stage (None, Staging, Production,
                                  Archived; any case)
    models:/<name>/latest         the highest version of the model
    runs:/<run_id>/<path>         a path in a run's artifacts (the run's root without a path)
    cairn-artifacts://<project>/<path>   a path in the artifact service

These are MLflow's forms plus Cairn's own; a `models:` URI names a model of the client's
project. Nothing here talks to a server: resolving is the client's work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import _names as names
from .._argument_error import invalid_argument
from ..types._registry import ModelVersionStage

MODELS_SCHEME = "models"
RUNS_SCHEME = "runs"
ARTIFACTS_SCHEME = "cairn-artifacts"
SCHEMES = (MODELS_SCHEME, RUNS_SCHEME, ARTIFACTS_SCHEME)
MAX_VERSION = 2**63 - 1  # the registry's version numbers are int64
# A version's source may itself be a models:/ URI; resolving stops after this many hops.
MAX_HOPS = 4
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_STAGES = {stage.value.lower(): stage for stage in ModelVersionStage}


@dataclass(frozen=True)
class ModelUri:
    """`models:/...`: exactly one of version, alias, stage or latest is set."""

    name: str
    version: int | None = None
    alias: str | None = None
    stage: ModelVersionStage | None = None
    latest: bool = False

    def __str__(self) -> str:
        if self.alias is not None:
            return f"models:/{self.name}@{self.alias}"
        reference = self.version if self.version is not None else self.stage or "latest"
        return f"models:/{self.name}/{getattr(reference, 'value', reference)}"


@dataclass(frozen=True)
class RunUri:
    """`runs:/<run_id>/<path>`; path "" is the run's whole artifact root."""

    run_id: str
    path: str = ""

    def __str__(self) -> str:
        return f"runs:/{self.run_id}/{self.path}" if self.path else f"runs:/{self.run_id}"


@dataclass(frozen=True)
class ArtifactUri:
    """`cairn-artifacts://<project>/<path>`; path "" is the whole project."""

    project: str
    path: str = ""

    def __str__(self) -> str:
        return f"cairn-artifacts://{self.project}/{self.path}"


Uri = ModelUri | RunUri | ArtifactUri


def scheme_of(text: str) -> str:
    """The URI's scheme in lower case ("" when it has none)."""
    match = _SCHEME.match(text)
    return match.group(1).lower() if match else ""


def is_uri(text: str) -> bool:
    """Whether text starts with a scheme ("models:", "s3:", ...), as no run id does."""
    return _SCHEME.match(text) is not None


def parse_uri(uri: str, argument: str = "uri") -> Uri:
    """Parses one of the forms in this module's docstring.

    Args:
        uri: the URI.
        argument: the name of the argument that held it, for the error.

    Raises:
        InvalidArgumentError: uri has another scheme or a malformed body, naming
            argument in field_violations; the message lists the accepted forms.
    """
    try:
        return _parsed(uri)
    except _Malformed as why:
        raise invalid_argument(
            argument,
            f"{uri!r}: {why}. Accepted: models:/<name>/<version>, models:/<name>@<alias>, "
            f"models:/<name>/<stage>, models:/<name>/latest, runs:/<run_id>/<path>, "
            f"cairn-artifacts://<project>/<path>",
        ) from None


class _Malformed(Exception):
    """Why a URI is none of the forms; parse_uri words the error with the argument."""


def _parsed(uri: str) -> Uri:
    kind = scheme_of(uri)
    body = uri[len(kind) + 1 :] if kind else ""
    if kind == MODELS_SCHEME:
        return _models(body)
    if kind == RUNS_SCHEME:
        return _runs(body)
    if kind == ARTIFACTS_SCHEME:
        return _artifacts(body)
    raise _Malformed("unknown scheme")


def _models(body: str) -> ModelUri:
    # "models://profile/..." names another server in MLflow; Cairn has one registry.
    if not body.startswith("/") or body.startswith("//"):
        raise _Malformed("write models:/<name>/<version>, models:/<name>@<alias> or ...")
    path = body[1:]
    name, at, alias = path.rpartition("@")
    if at and name and "/" not in alias:
        if not alias:
            raise _Malformed("the alias is empty")
        _no_odd_segments(name, "the model name")
        return ModelUri(name, alias=alias)
    name, slash, reference = path.rpartition("/")
    if not slash or not name or not reference:
        raise _Malformed("a model URI needs a name and a version, stage, alias or 'latest'")
    _no_odd_segments(name, "the model name")
    if reference.isascii() and reference.isdigit():
        # Versions are numbered from 1: a URI of version 0 names none.
        if not (reference.strip("0") and _within_versions(reference)):
            raise _Malformed(f"a version number is 1 to {MAX_VERSION}")
        return ModelUri(name, version=int(reference.lstrip("0")))
    if reference.lower() == "latest":
        return ModelUri(name, latest=True)
    if reference.lower() in _STAGES:
        return ModelUri(name, stage=_STAGES[reference.lower()])
    raise _Malformed(f"{reference!r} is no version number, stage ({_stage_names()}) or 'latest'")


def _runs(body: str) -> RunUri:
    if not body.startswith("/") or body.startswith("//"):
        raise _Malformed("write runs:/<run_id>/<path>")
    run_id, _, path = body[1:].partition("/")
    if not run_id:
        raise _Malformed("the run id is empty")
    return RunUri(run_id, _clean(path))


def _artifacts(body: str) -> ArtifactUri:
    if not body.startswith("//"):
        raise _Malformed("write cairn-artifacts://<project>/<path>")
    project, _, path = body[2:].partition("/")
    if not project:
        raise _Malformed("the project is empty")
    return ArtifactUri(project, _clean(path))


def _clean(path: str) -> str:
    """The path without trailing "/"; empty, "." and ".." segments are refused here, as
    the artifact service refuses them, so a URI cannot climb out of a run's root."""
    path = path.rstrip("/")
    if path:
        _no_odd_segments(path, "the path")
    return path


def _no_odd_segments(text: str, what: str) -> None:
    """Refuses an empty, "." or ".." segment of a path or a model's name (the one rule
    of both, cairn._names): URL tools read models:/m1/../1 as models:/1, and no model
    is created under such a name, which no copy could take as its source."""
    if names.segments_problem(text.split("/")):
        raise _Malformed(f"{what} holds an empty, '.' or '..' segment")


def _stage_names() -> str:
    return ", ".join(stage.value for stage in ModelVersionStage)


def version_number(version: int | float | str) -> int:
    """A version number as the registry takes it (an int64; as int() reads it, from an
    int, a whole float or digits with spaces around), else InvalidArgumentError, as the
    server answers a bad one."""
    if isinstance(version, float) and version.is_integer():
        version = int(version)
    text = str(version).strip()
    if not (text.isascii() and text.isdigit() and _within_versions(text)):
        raise invalid_argument("version", f"{version!r} is no version number (0 to {MAX_VERSION})")
    return int(text.lstrip("0") or "0")


def _within_versions(digits: str) -> bool:
    # Counted before int() reads them: it refuses more than 4,300 digits (ValueError).
    significant = digits.lstrip("0") or "0"
    return len(significant) <= len(str(MAX_VERSION)) and int(significant) <= MAX_VERSION
