"""The README's client example runs as written against a served process."""

import re
import subprocess
import sys

import pytest

from tests.conftest import repo_root
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e


def test_readme_client_example_runs(served: ServerProcess) -> None:
    readme = (repo_root() / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.S)
    assert example, "README has no python example"
    port = served.address.rsplit(":", 1)[1]
    code = example.group(1).replace("50051", port)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # the example prints only on errors
