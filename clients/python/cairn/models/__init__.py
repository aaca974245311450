"""Models as directories of artifacts, their flavors, manifest, cache and URIs.

`TrackingClient.log_model` writes a model (a flavor's files plus a manifest with the
sha256 of each) into a run's artifacts and can register it; `TrackingClient.load_model`
and `TrackingClient.download_artifacts` take any URI this module parses::

    info = await tracking.log_model(run_id, estimator, "model", flavor="sklearn",
                                    registered_model_name="churn")
    await registry.set_registered_model_alias("churn", "champion", info.registered_model_version)
    model = await tracking.load_model("models:/churn@champion", allow_pickle=True)

docs/models.md tells the whole journey.
"""

from ._cache import CACHE_ENV, ModelCache, default_cache_dir
from ._flavors import (
    CloudpickleFlavor,
    FilesFlavor,
    Flavor,
    PickleFlavor,
    SklearnFlavor,
    UntrustedModelError,
    get_flavor,
    register_flavor,
)
from ._info import ModelInfo
from ._manifest import MANIFEST, FileEntry, Manifest
from ._uris import ArtifactUri, ModelUri, RunUri, Uri, is_uri, parse_uri

__all__ = [
    "CACHE_ENV",
    "MANIFEST",
    "ArtifactUri",
    "CloudpickleFlavor",
    "FileEntry",
    "FilesFlavor",
    "Flavor",
    "Manifest",
    "ModelCache",
    "ModelInfo",
    "ModelUri",
    "PickleFlavor",
    "RunUri",
    "SklearnFlavor",
    "UntrustedModelError",
    "Uri",
    "default_cache_dir",
    "get_flavor",
    "is_uri",
    "parse_uri",
    "register_flavor",
]
