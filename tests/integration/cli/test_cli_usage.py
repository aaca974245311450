"""Usage mistakes the `cairn` command refuses before any call, with exit status 2 and a
line naming the argument: none of these reaches a server (cairn.invalid resolves
nowhere)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.cli_helpers import environment, run_cairn
from tests.e2e.conftest import tool


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
        # A name no URI can carry: refused by the call, status 1, naming run_id.
        (["models", "download", "a//b", "--version", "1"], "NAME"),
        (["models", "download", "..", "--alias", "champion"], "NAME"),
        # Refused by the call, status 1, naming its run_id argument.
        (["artifacts", "download", "-u", "bogus://x"], "--artifact-uri"),
        # As a store path: refused by the server, status 1.
        (["artifacts", "download", "-a", "a//b"], "--artifact-path"),
        # As download reads a store path: a leading '/' went, and rm deleted 'datasets'.
        (["artifacts", "rm", "/datasets", "--recursive"], "PATH"),
        (["artifacts", "list", "a/../b"], "PATH"),
        # Above the run: refused by the server, status 1.
        (["artifacts", "list", "../x", "-r", "0" * 32], "PATH"),
        (["artifacts", "download", "-r", "0" * 32, "-a", "../x"], "--artifact-path"),
        # The run's root by a typo: it deleted every artifact of the run.
        (["artifacts", "rm", "x/..", "-r", "0" * 32, "--recursive"], "PATH"),
        # A script's --project "$P" with P unset worked in the profile's or "default".
        (["--project", "", "experiments", "create", "x"], "--project"),
        (["experiments", "list", "--profile", " "], "--profile"),
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
    assert done.returncode == 2, done.stderr
    assert "the API key is 20000 characters long" in done.stderr
    assert "kkkk" not in done.stderr and "RESOURCE_EXHAUSTED" not in done.stderr


@pytest.mark.parametrize("version", ["99999999999999999999999", "0"])
@pytest.mark.parametrize("command", [["alias", "m", "champion"], ["stage", "m"]])
def test_a_version_no_model_can_have_is_a_usage_error(
    env: dict[str, str], command: list[str], version: str
) -> None:
    """alias and stage sent any integer: the server refused one past 64 bits (status 1,
    INVALID_ARGUMENT), and stage answered NOT_FOUND for 0; download refused both."""
    stage = ["production"] if command[0] == "stage" else []
    done = run_cairn("models", *command, version, *stage, env=env)
    assert done.returncode == 2, done.stderr
    assert "VERSION" in done.stderr and "INVALID_ARGUMENT" not in done.stderr


def test_a_key_a_header_cannot_carry_is_a_usage_error_never_echoed(
    env: dict[str, str],
) -> None:
    """A key of terminal controls reached the client, which refused it with status 1."""
    flag = run_cairn("--api-key", "\x1b[2J", "experiments", "list", env=env)
    assert flag.returncode == 2, flag.stderr
    assert "--api-key" in flag.stderr and "a key is printable ASCII" in flag.stderr
    variable = run_cairn("experiments", "list", env={**env, "CAIRN_API_KEY": "\x1b[2J"})
    assert variable.returncode == 2, variable.stderr
    assert "CAIRN_API_KEY is not a valid value" in variable.stderr
    assert "\x1b" not in flag.stderr + variable.stderr


def test_a_profile_mistake_naming_a_hostile_path_is_one_line(tmp_path: Path) -> None:
    """Its message named the file as it is: a clear-screen or a line break in the path
    reached the terminal."""
    profiles = tmp_path / "prof\x1b[2J\nfile.ini"
    profiles.write_text("[default]\nbogus = 1\n")
    profiles.chmod(0o600)
    done = run_cairn("projects", "list", env=environment(tmp_path, CAIRN_PROFILES=str(profiles)))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "\x1b" not in done.stderr
    assert "prof\\x1b[2J\\x0afile.ini" in done.stderr and "bogus" in done.stderr


def test_a_profile_file_the_variable_names_must_be_there(tmp_path: Path) -> None:
    """A typo in CAIRN_PROFILES connected to 127.0.0.1:50051 unsaid; the default file
    absent is no mistake."""
    missing = tmp_path / "profiles-typo.ini"
    done = run_cairn("projects", "list", env=environment(tmp_path, CAIRN_PROFILES=str(missing)))
    assert done.returncode == 2, done.stderr
    assert f"no profile file at {missing}" in done.stderr and done.stderr.count("\n") == 1
    unset = run_cairn("projects", "list", "--timeout", "1", env=environment(tmp_path))
    assert unset.returncode in (0, 1)  # the call made, whatever listens there (or none)
    assert "no profile file" not in unset.stderr


def test_a_line_to_a_full_disk_in_an_ascii_locale_is_an_output_error(tmp_path: Path) -> None:
    """click writes to an ASCII stdout around it, in UTF-8 to its bytes: a full disk was
    `unexpected OSError` there, where any other locale says it cannot write output."""
    env = environment(tmp_path, CAIRN_ADDRESS="cairn.invalid:1", PYTHONIOENCODING="ascii")
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [tool("cairn"), "sync"], env=env, stdout=full, stderr=subprocess.PIPE, text=True
        )
    assert done.returncode == 1
    assert done.stderr == "Error: cannot write output: No space left on device\n"
