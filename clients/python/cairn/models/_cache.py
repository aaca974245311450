"""The local cache of downloaded models, keyed by the sha256 of their manifest.

A manifest holds the sha256 of every file, so its own sha256 names the model's exact
content: two URIs that resolve to the same files share one entry, and an entry, once
complete, never needs fetching again. An entry is filled in a temporary folder beside
it, each file checked against the manifest, then renamed into place: a reader sees a
whole verified model or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from ._manifest import MANIFEST, Manifest
from ._paths import inside

CACHE_ENV = "CAIRN_MODEL_CACHE"


def default_cache_dir() -> Path:
    """$CAIRN_MODEL_CACHE, else $XDG_CACHE_HOME/cairn/models, else ~/.cache/cairn/models."""
    if configured := os.environ.get(CACHE_ENV):
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cairn" / "models"


class ModelCache:
    """Entries `<root>/<manifest sha256>/`, each a model directory with its manifest."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    @staticmethod
    def key(manifest_bytes: bytes) -> str:
        return hashlib.sha256(manifest_bytes).hexdigest()

    def lookup(self, key: str, manifest: Manifest) -> Path | None:
        """The entry, when it is complete and its files still have their sizes (a cheap
        check against a hand-edited cache; the full check ran when it was filled)."""
        entry = self.root / key
        if not (entry / MANIFEST).is_file():
            return None
        for relative, expected in manifest.files.items():
            file = inside(entry, relative, str(entry))
            if not file.is_file() or file.stat().st_size != expected.size:
                shutil.rmtree(entry, ignore_errors=True)
                return None
        return entry

    @contextlib.contextmanager
    def filling(self, key: str) -> Iterator[Path]:
        """A temporary folder to fill; when the block ends without error it becomes the
        entry (a concurrent filler's entry wins, ours is dropped)."""
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = self.root / f".{key}.{uuid.uuid4().hex}.part"
        scratch.mkdir()
        try:
            yield scratch
            with contextlib.suppress(OSError):  # the entry exists already
                scratch.rename(self.root / key)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
