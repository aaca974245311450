"""The services a Cairn process can host, by their command-line names."""

from __future__ import annotations

from . import operations
from .artifacts import SPEC as ARTIFACTS
from .auth import SPEC as AUTH
from .common.service import ServiceSpec
from .registry import SPEC as REGISTRY
from .tracking import SPEC as TRACKING

# In the order a garbage collection runs their steps, whatever the order they are
# named in: those letting go of artifact locations before artifacts, which drains them.
SERVICES: dict[str, ServiceSpec] = {spec.name: spec for spec in (TRACKING, REGISTRY, ARTIFACTS)}


def select(names: list[str]) -> list[ServiceSpec]:
    """The specs for names, after the two every server hosts: auth, whose gate admits
    the calls of all the others, and operations, which runs their garbage collection
    (docs/operations.md); "all" (or no name) means every service."""
    if not names or names == ["all"]:
        names = list(SERVICES)
    if "all" in names:  # was "unknown service all", a choice the list did not name
        raise ValueError(f"all (every service) goes alone; or choose from {', '.join(SERVICES)}")
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise ValueError(f"unknown service {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
    served = [AUTH, *(spec for name, spec in SERVICES.items() if name in names)]
    return [served[0], operations.spec(served), *served[1:]]
