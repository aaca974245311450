from pathlib import Path

import pytest

from cairn_server import catalog
from cairn_server.common import migrations


def test_discover_orders_by_version(tmp_path: Path) -> None:
    (tmp_path / "0002_more.sql").write_text("SELECT 2;")
    (tmp_path / "0001_init.sql").write_text("SELECT 1;")
    found = migrations.discover(tmp_path)
    assert [(m.version, m.name) for m in found] == [(1, "0001_init"), (2, "0002_more")]


def test_discover_rejects_a_gap(tmp_path: Path) -> None:
    (tmp_path / "0001_init.sql").write_text("")
    (tmp_path / "0003_skip.sql").write_text("")
    with pytest.raises(ValueError, match="numbered 1, 2, 3"):
        migrations.discover(tmp_path)


def test_discover_rejects_an_odd_name(tmp_path: Path) -> None:
    (tmp_path / "1_Init.sql").write_text("")
    with pytest.raises(ValueError, match="NNNN_description"):
        migrations.discover(tmp_path)


@pytest.mark.parametrize("spec", catalog.select([]), ids=lambda s: s.name)
def test_every_service_ships_well_formed_migrations(spec: catalog.ServiceSpec) -> None:
    migrations.discover(spec.migrations_dir)
