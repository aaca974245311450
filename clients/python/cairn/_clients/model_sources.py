"""Where a models:/ URI's files are: through the versions it names, as far as their files.

A version's download URI (its first model artifact's, else its source) may itself be a
models:/ URI (a copy's source, a version registered by an alias): loads and copies follow
them to a runs:/ or cairn-artifacts:// URI, or another store's, at most MAX_HOPS deep.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import FailedPreconditionError, NotFoundError
from ..models._uris import MAX_HOPS, MODELS_SCHEME, ModelUri, parse_uri, scheme_of

# The version tag that pins a registered version to the model it was registered with:
# the sha256 of its manifest, which names every file's. A load through the registry
# refuses another model found at the version's source since (copy_model_version copies
# the tag with the others).
MANIFEST_TAG = "cairn.manifest_sha256"


async def files_of(registry: Any, uri: str, argument: str) -> tuple[str, str | None]:
    """The URI of the files uri names: uri itself unless it is a models:/ URI, followed
    through the versions such URIs name, and the pin (MANIFEST_TAG) of the first
    version on the way that has one.

    Raises:
        InvalidArgumentError: a models:/ URI on the way is malformed, naming argument.
        NotFoundError: one names no version, or one without a source.
        FailedPreconditionError: (MODEL_URI_TOO_DEEP) past MAX_HOPS versions.
    """
    current, pin = uri, None
    for _ in range(MAX_HOPS):
        if scheme_of(current) != MODELS_SCHEME:
            return current, pin
        parsed = parse_uri(current, argument)
        assert isinstance(parsed, ModelUri)  # the models scheme parses as one or raises
        current, pinned = await version_source(registry, parsed)
        pin = pin or pinned
    if scheme_of(current) != MODELS_SCHEME:
        return current, pin
    raise FailedPreconditionError(
        f"{uri} names a version whose source names another, and so on, more than "
        f"{MAX_HOPS} times; the last named {current!r}",
        reason="MODEL_URI_TOO_DEEP",
    )


async def version_source(registry: Any, uri: ModelUri) -> tuple[str, str | None]:
    """The download URI of the version a models:/ URI names, and its pin (MANIFEST_TAG;
    None for a version registered without one)."""
    if uri.alias is not None:
        number = (await registry.get_model_version_by_alias(uri.name, uri.alias)).version
    elif uri.version is not None:
        number = uri.version
    else:
        stages = [uri.stage] if uri.stage is not None else None
        found = await registry.get_latest_versions(uri.name, stages)
        if not found:
            raise NotFoundError(
                f"{uri}: model {uri.name!r} has no version"
                + (f" in stage {uri.stage.value}" if uri.stage is not None else ""),
                reason="MODEL_VERSION_NOT_FOUND",
            )
        number = max(v.version or 0 for v in found)
    version = await registry.get_model_version(uri.name, number or 0)
    source = await registry.get_model_version_download_uri(uri.name, number or 0)
    if not source:
        raise NotFoundError(
            f"{uri}: version {number} of {uri.name!r} has no source or model artifact URI",
            reason="MODEL_VERSION_NOT_FOUND",
        )
    return source, version.tags.get(MANIFEST_TAG)
