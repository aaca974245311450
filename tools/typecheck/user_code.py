"""Code as users write it against the client's public types: `make lint` type-checks it
(it is never run), so a type that refuses what the docs show fails the build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cairn.models import register_flavor


class PlainFlavor:
    """A flavor whose name, libraries and unsafe are plain class attributes, as a user
    writes them (docs/models.md, "Flavors")."""

    name = "plain"
    libraries = ("numpy",)
    unsafe = False

    def matches(self, model: Any) -> bool:
        return isinstance(model, str)

    def save(self, model: Any, directory: Path) -> dict[str, Any]:
        (directory / "model.txt").write_text(model)
        return {}

    def load(self, directory: Path, options: Any) -> Any:
        return (directory / "model.txt").read_text()


register_flavor(PlainFlavor())
