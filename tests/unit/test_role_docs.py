"""docs/auth.md shows the role table the servers enforce, exactly."""

from __future__ import annotations

from cairn_server import catalog
from cairn_server.common.access import Role
from tests.conftest import repo_root


def role_table_markdown() -> str:
    rows = ["| Service | Least role | Methods |", "|---|---|---|"]
    for spec in catalog.select([]):
        for role in Role:
            methods = [name for name, needed in spec.roles.items() if needed is role]
            if methods:
                service = spec.full_name.rpartition(".")[2]
                rows.append(f"| {service} | {role.name.lower()} | {', '.join(methods)} |")
    return "\n".join(rows) + "\n"


def test_the_documented_role_table_is_the_enforced_one() -> None:
    documented = (repo_root() / "docs" / "auth.md").read_text()
    assert role_table_markdown() in documented, role_table_markdown()
