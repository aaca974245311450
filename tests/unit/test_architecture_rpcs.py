"""docs/architecture.md's "The RPCs" names every RPC the servers serve, each under its
service: a new RPC left out of it (the upload tickets, UpdateProject) went unnoticed."""

from __future__ import annotations

import re

import pytest

from cairn_server import catalog
from tests.conftest import repo_root


def _documented_rpcs() -> dict[str, set[str]]:
    """The names in backquotes under each `### <service>` heading of "The RPCs"."""
    text = (repo_root() / "docs" / "architecture.md").read_text()
    section = text.split("\n## The RPCs\n", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, set[str]] = {}
    for block in section.split("\n### ")[1:]:
        heading, _, body = block.partition("\n")
        documented[heading.strip()] = set(re.findall(r"`(\w+)`", body))
    return documented


@pytest.mark.parametrize("spec", catalog.select([]), ids=lambda spec: spec.full_name)
def test_every_served_rpc_is_documented_under_its_service(spec) -> None:
    served = set(spec.roles)  # every RPC of a service has its role (ServiceSpec.roles)
    missing = served - _documented_rpcs().get(spec.full_name, set())
    assert not missing, f"{spec.full_name}: {sorted(missing)} left out of docs/architecture.md"
