"""docs/models.md's example runs as written, in a process of its own, against the
services over gRPC (only its port and project are changed)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import new_project, repo_root


async def test_the_models_doc_example_runs(server_port: int, unique: str, tmp_path: Path) -> None:
    text = (repo_root() / "docs" / "models.md").read_text()
    example = re.search(r"```python\n(.*?)```", text, re.S)
    assert example, "docs/models.md has no python example"
    project = await new_project(server_port, f"doc-{unique}")
    code = example.group(1).replace(
        '"127.0.0.1", 50051)', f'"127.0.0.1", {server_port}, project="{project}")'
    )
    assert code.count(f'project="{project}"') == 2
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
