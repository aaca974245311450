"""The experiment ids a search is given, as its request carries them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def experiment_ids_of(experiment_ids: Sequence[str | int] | str | int) -> list[str]:
    """One id may come alone, as a string or a number (numpy's too), as in MLflow."""
    ids: list[Any] = [experiment_ids]
    if isinstance(experiment_ids, Iterable) and not isinstance(experiment_ids, str):
        ids = list(experiment_ids)
    return [str(i) for i in ids]
