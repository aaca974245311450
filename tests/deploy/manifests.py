"""The rendered overlays, as `kubectl kustomize` writes them, and ways to read them."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import repo_root

OVERLAYS = ["dev", "prod"]
BIN = Path(sys.executable).parent
WORKLOADS = {"Deployment", "StatefulSet", "Job"}

Object = dict[str, Any]


@cache
def rendered(overlay: str) -> str:
    result = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(repo_root() / "deploy/k8s/overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def objects(overlay: str) -> list[Object]:
    """A fresh copy each time: tests may change what they get."""
    return [doc for doc in yaml.safe_load_all(rendered(overlay)) if doc]


def of_kind(overlay: str | list[Object], *kinds: str) -> list[Object]:
    found = objects(overlay) if isinstance(overlay, str) else overlay
    return [o for o in found if o["kind"] in kinds]


def named(found: list[Object], kind: str, name: str) -> Object:
    (match,) = [o for o in found if o["kind"] == kind and o["metadata"]["name"] == name]
    return match


def pod_spec(workload: Object) -> Object:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Object) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"].get("labels") or {})


def containers(workload: Object) -> list[Object]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def cairn_servers(overlay: str | list[Object]) -> list[Object]:
    return [
        d for d in of_kind(overlay, "Deployment") if pod_labels(d).get("cairn.dev/server") == "true"
    ]
