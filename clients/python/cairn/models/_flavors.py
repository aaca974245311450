"""Flavors: how a kind of model becomes files and comes back from them.

A flavor is a small object with a name, the libraries whose versions the manifest keeps,
whether loading it runs code from the files (`unsafe`), and three methods. Register your
own with `register_flavor`; `log_model(flavor=None)` picks the first registered flavor,
newest first, whose `matches` accepts the model.
"""

from __future__ import annotations

import importlib.util
import pickle
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from .._argument_error import invalid_argument
from .._clients._local_files import MODEL_NOT_SENT, files_in, local_reads, local_writes
from ..exceptions import FailedPreconditionError
from ._paths import inside, relative_path


@runtime_checkable
class Flavor(Protocol):
    """What a flavor provides.

    Attributes:
        name: stored in the manifest, and the `flavor=` argument of `log_model`.
        libraries: distributions whose installed versions the manifest records.
        unsafe: loading runs code stored in the files (pickle); `load_model` then
            refuses unless called with `allow_pickle=True`.
    """

    # Read-only properties, so that a flavor may give them as plain class attributes
    # (`name = "mine"`), class variables or properties, and a type checker accepts each.
    @property
    def name(self) -> str: ...

    @property
    def libraries(self) -> tuple[str, ...]: ...

    @property
    def unsafe(self) -> bool: ...

    def matches(self, model: Any) -> bool:
        """Whether `log_model(flavor=None)` should pick this flavor for model."""
        ...

    def save(self, model: Any, directory: Path) -> dict[str, Any]:
        """Writes the model's files into the (empty) directory; returns the options that
        `load` needs (kept in the manifest, JSON-serialisable)."""
        ...

    def load(self, directory: Path, options: Mapping[str, Any]) -> Any:
        """The model, from a directory holding the files `save` wrote (verified)."""
        ...


def check_options(flavor: Flavor, options: Mapping[str, Any], where: str) -> None:
    """Refuses, before anything is fetched, a `path` option that a built-in flavor would
    read as a file out of the model (DataLossError, INVALID_MODEL_MANIFEST); another
    flavor's options are its own."""
    if isinstance(flavor, FilesFlavor | PickleFlavor):
        relative_path(options.get("path"), where, "its path option")


class UntrustedModelError(FailedPreconditionError):
    """A model whose loading runs code (pickle) was loaded without `allow_pickle=True`."""


class FilesFlavor:
    """A local file or directory, stored as it is; loading returns its local path
    (ONNX files, a Hugging Face directory, anything a server reads itself): a read-only
    path in the shared model cache (`download_artifacts` makes a copy to change)."""

    name: ClassVar[str] = "files"
    libraries: ClassVar[tuple[str, ...]] = ()
    unsafe: ClassVar[bool] = False

    def matches(self, model: Any) -> bool:
        return isinstance(model, str | Path) and Path(model).exists()

    def save(self, model: Any, directory: Path) -> dict[str, Any]:
        source = Path(model)
        if source.is_dir():
            _copy_tree(source, directory / source.name)
        elif source.is_file():
            _copy(source, directory / source.name)
        else:
            raise invalid_argument("model", f"{str(source)!r} is no file or directory")
        return {"path": source.name}

    def load(self, directory: Path, options: Mapping[str, Any]) -> Path:
        return inside(directory, options.get("path"), str(directory), "its path option")


def _copy_tree(source: Path, target: Path) -> None:
    """The files of source that log_artifacts would upload (files_in: a link to a file
    as the file; a dangling link, a loop or a link to a folder left out), copied into
    target, so that a model directory is stored as log_artifacts stores one. A copy of
    the whole tree (shutil.copytree) followed links to folders, and raised a bare
    shutil.Error at a dangling link or walked a loop some 40 levels deep first. A
    directory of no file is refused: its model, of no file, loaded as a path that was
    never made."""
    relatives = files_in(source)
    if not relatives:
        raise invalid_argument("model", f"{str(source)!r} holds no file (links to folders aside)")
    for relative in relatives:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        _copy(source / relative, target / relative)


def _copy(source: Path, target: Path) -> None:
    """source copied to target; a source that cannot be read (not the caller's, or
    removed since its tree was listed) is refused as files_in refuses one
    (LOCAL_READ_FAILED), a target that cannot be written (the temporary folder's disk
    full or failing) as a download's is (LOCAL_WRITE_FAILED)."""
    with local_writes(target, MODEL_NOT_SENT), local_reads(source, MODEL_NOT_SENT):
        shutil.copy2(source, target)


class PickleFlavor:
    """Any picklable object, in model.pkl (the standard library's pickle)."""

    name: ClassVar[str] = "pickle"
    libraries: ClassVar[tuple[str, ...]] = ()
    unsafe: ClassVar[bool] = True
    _file = "model.pkl"

    def matches(self, model: Any) -> bool:
        # Never chosen by itself: pickling is explicit, as its unpickling will be.
        return False

    def save(self, model: Any, directory: Path) -> dict[str, Any]:
        with (directory / self._file).open("wb") as out:
            self._dump(model, out)
        return {"path": self._file}

    def load(self, directory: Path, options: Mapping[str, Any]) -> Any:
        path = inside(directory, options.get("path"), str(directory), "its path option")
        with path.open("rb") as source:
            return pickle.load(source)  # the caller allowed it: allow_pickle=True

    def _dump(self, model: Any, out: Any) -> None:
        pickle.dump(model, out, protocol=pickle.HIGHEST_PROTOCOL)


class CloudpickleFlavor(PickleFlavor):
    """Objects plain pickle cannot store (lambdas, closures, classes of a notebook),
    with cloudpickle; loading needs cloudpickle installed too."""

    name: ClassVar[str] = "cloudpickle"
    libraries: ClassVar[tuple[str, ...]] = ("cloudpickle",)

    def _dump(self, model: Any, out: Any) -> None:
        cloudpickle = _require("cloudpickle", self.name)
        cloudpickle.dump(model, out, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, directory: Path, options: Mapping[str, Any]) -> Any:
        _require("cloudpickle", self.name)  # its pickles reference cloudpickle's helpers
        return super().load(directory, options)


class SklearnFlavor(PickleFlavor):
    """A scikit-learn estimator or pipeline, pickled as scikit-learn documents it.

    Unpickling runs code, so loading needs `allow_pickle=True` like any pickle; the
    manifest keeps the scikit-learn version, and loading with another warns.
    """

    name: ClassVar[str] = "sklearn"
    libraries: ClassVar[tuple[str, ...]] = ("scikit-learn", "numpy")

    def matches(self, model: Any) -> bool:
        if importlib.util.find_spec("sklearn") is None:
            return False
        from sklearn.base import BaseEstimator

        return isinstance(model, BaseEstimator)

    def save(self, model: Any, directory: Path) -> dict[str, Any]:
        _require("sklearn", self.name)
        return super().save(model, directory)


_FLAVORS: dict[str, Flavor] = {}


def register_flavor(flavor: Flavor) -> None:
    """Adds a flavor (or replaces the one of the same name); later ones are tried first
    when `log_model` picks a flavor by itself."""
    if not isinstance(flavor, Flavor):
        raise TypeError(f"{flavor!r} lacks what a Flavor has (name, save, load, ...)")
    _FLAVORS.pop(flavor.name, None)
    _FLAVORS[flavor.name] = flavor


def get_flavor(name: str) -> Flavor:
    """The registered flavor of that name.

    Raises:
        InvalidArgumentError: no flavor of that name is registered.
    """
    try:
        return _FLAVORS[name]
    except KeyError:
        raise invalid_argument(
            "flavor",
            f"no model flavor {name!r} (a flavor of your own must be registered with "
            f"cairn.models.register_flavor where the model is loaded too); registered: "
            f"{', '.join(sorted(_FLAVORS))}",
        ) from None


def flavor_for(model: Any) -> Flavor:
    """The newest registered flavor that matches model."""
    for flavor in reversed(_FLAVORS.values()):
        if flavor.matches(model):
            return flavor
    raise invalid_argument(
        "model",
        f"no flavor recognises a {type(model).__name__}; pass flavor= "
        f"({', '.join(sorted(_FLAVORS))}), e.g. flavor='pickle' for any picklable object",
    )


def _require(module: str, flavor: str) -> Any:
    if importlib.util.find_spec(module) is None:
        raise FailedPreconditionError(
            f"the {flavor} flavor needs {module}, which is not installed",
            reason="FAILED_PRECONDITION",
        )
    return importlib.import_module(module)


for _builtin in (PickleFlavor(), CloudpickleFlavor(), SklearnFlavor(), FilesFlavor()):
    register_flavor(_builtin)
