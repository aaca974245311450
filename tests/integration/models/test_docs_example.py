"""docs/models.md's examples run as written, each in a process of its own and a project
of its own, against the services over gRPC (only their port and project are changed)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import new_project, repo_root

EXAMPLES = re.findall(
    r"```python\n(.*?)```", (repo_root() / "docs" / "models.md").read_text(), re.S
)
ADDRESS = '"127.0.0.1", 50051)'


def test_the_models_doc_has_its_three_journeys() -> None:
    assert len(EXAMPLES) == 3  # MLflow's, ML Aide's, Devo's


@pytest.mark.parametrize("number", range(len(EXAMPLES)), ids=["mlflow", "ml_aide", "devo"])
async def test_a_models_doc_example_runs(
    server_port: int, unique: str, tmp_path: Path, number: int
) -> None:
    example = EXAMPLES[number]
    project = await new_project(server_port, f"doc{number}-{unique}")
    code = example.replace(ADDRESS, f'"127.0.0.1", {server_port}, project="{project}")')
    assert code.count(f'project="{project}"') == example.count(ADDRESS) >= 1
    assert "50051" not in code
    environment = {**os.environ, "CAIRN_MODEL_CACHE": str(tmp_path / "cache")}

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert len(list((tmp_path / "cache").iterdir())) == 1  # loaded through the cache
