"""The services a Cairn process can host, by their command-line names."""

from __future__ import annotations

from .artifacts import SPEC as ARTIFACTS
from .auth import SPEC as AUTH
from .common.service import ServiceSpec
from .registry import SPEC as REGISTRY
from .tracking import SPEC as TRACKING

SERVICES: dict[str, ServiceSpec] = {spec.name: spec for spec in (TRACKING, REGISTRY, ARTIFACTS)}


def select(names: list[str]) -> list[ServiceSpec]:
    """The specs for names, after the auth service, which every server hosts because its
    gate admits the calls of all the others; "all" (or no name) means every service."""
    if not names or names == ["all"]:
        return [AUTH, *SERVICES.values()]
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise ValueError(f"unknown service {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
    return [AUTH, *(SERVICES[n] for n in dict.fromkeys(names))]
