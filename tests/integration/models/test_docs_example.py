"""docs/models.md's examples run as written, one after another in one project, and then
all again: each is safe to run twice beside the others (only the port and project are
changed; each runs in a process of its own)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import new_project, repo_root

EXAMPLES = re.findall(
    r"```python\n(.*?)```", (repo_root() / "docs" / "models.md").read_text(), re.S
)
ADDRESS = '"127.0.0.1", 50051)'


def test_the_models_doc_has_its_three_journeys() -> None:
    assert len(EXAMPLES) == 3  # MLflow's, ML Aide's, Devo's


async def test_the_models_doc_examples_run_in_one_project_twice(
    server_port: int, unique: str, tmp_path: Path
) -> None:
    project = await new_project(server_port, f"docs-{unique}")
    environment = {**os.environ, "CAIRN_MODEL_CACHE": str(tmp_path / "cache")}
    for attempt in (1, 2):
        for number, example in enumerate(EXAMPLES):
            code = example.replace(ADDRESS, f'"127.0.0.1", {server_port}, project="{project}")')
            assert code.count(f'project="{project}"') == example.count(ADDRESS) >= 1
            assert "50051" not in code

            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                timeout=120,
                env=environment,
            )

            assert result.returncode == 0, f"example {number}, pass {attempt}: {result.stderr}"
            assert result.stdout == ""
    # Each example loads one model a pass, through the cache; every model differs.
    assert len(list((tmp_path / "cache").iterdir())) == 2 * len(EXAMPLES)
