"""Usage mistakes the `cairn` command refuses before any call, with exit status 2 and a
line naming the argument: none of these reaches a server (cairn.invalid resolves
nowhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.cli_helpers import environment, run_cairn


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return environment(tmp_path, CAIRN_ADDRESS="cairn.invalid:50051")


@pytest.mark.parametrize(
    ("command", "named"),
    [
        # A key named "" was made, named "cli", without a word (exit status 0).
        (["keys", "create", "--name", ""], "--name"),
        # The URI models://1 was refused, status 1, naming download_artifacts' run_id.
        (["models", "download", "", "--version", "1"], "NAME"),
        # Refused by the call, status 1, naming its run_id argument.
        (["artifacts", "download", "-u", "bogus://x"], "--artifact-uri"),
    ],
)
def test_an_empty_or_malformed_argument_is_a_usage_error_naming_it(
    env: dict[str, str], command: list[str], named: str
) -> None:
    done = run_cairn(*command, env=env)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and "run_id:" not in done.stderr


def test_a_key_longer_than_a_header_carries_is_refused_before_the_call(
    env: dict[str, str],
) -> None:
    """A 20,000-character --api-key reached the call, which failed RESOURCE_EXHAUSTED
    with gRPC's words alone ("received metadata size exceeds hard limit")."""
    done = run_cairn("--api-key", "k" * 20_000, "experiments", "list", env=env)
    assert done.returncode == 1, done.stderr
    assert "the API key is 20000 characters long" in done.stderr
    assert "kkkk" not in done.stderr and "RESOURCE_EXHAUSTED" not in done.stderr
