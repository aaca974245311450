"""`cairn keys` against a server that requires keys (bootstrapped by `cairn keys create
--admin`, the server's path through the same executable), and where the command
connects: flag over CAIRN_* variable over profile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cli_helpers import as_json, environment, failed, ok, run_cairn
from tests.e2e.conftest import ServerProcess, served_with_keys

pytestmark = pytest.mark.e2e

DEAD = "127.0.0.1:1"  # nothing listens there


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A served instance requiring keys, and the admin key `cairn keys create --admin` made."""
    with served_with_keys(tmp_path_factory.mktemp("cli-keys")) as keyed:
        yield keyed


def test_keys_create_list_revoke(keyed: tuple[ServerProcess, str], tmp_path: Path) -> None:
    server, admin = keyed
    env = environment(tmp_path, CAIRN_ADDRESS=server.address, CAIRN_API_KEY=admin)
    laptop = ok("keys", "create", "--name", "laptop", "--expires", "30d", env=env).strip()
    assert laptop.startswith("cairn_") and laptop != admin

    keys = {k["name"]: k for k in as_json("keys", "list", env=env)}
    assert set(keys) >= {"bootstrap", "laptop"}
    assert keys["laptop"]["user_id"] == "ops"
    assert keys["laptop"]["expire_time"] > keys["laptop"]["create_time"]
    assert keys["bootstrap"]["expire_time"] is None
    assert keys["laptop"]["prefix"] in laptop
    assert "laptop" in ok("keys", "list", env=env)

    as_laptop = {**env, "CAIRN_API_KEY": laptop}
    ok("experiments", "list", env=as_laptop)
    ok("keys", "revoke", keys["laptop"]["prefix"], env=env)
    revoked = {k["name"]: k for k in as_json("keys", "list", env=env)}["laptop"]
    assert revoked["revoke_time"] is not None
    assert "UNAUTHENTICATED" in failed("experiments", "list", env=as_laptop)


def test_no_key_is_unauthenticated(keyed: tuple[ServerProcess, str], tmp_path: Path) -> None:
    server, _ = keyed
    env = environment(tmp_path, CAIRN_ADDRESS=server.address)
    assert failed("keys", "list", env=env).startswith("Error: UNAUTHENTICATED")


def write_profiles(home: Path, text: str) -> Path:
    file = home / ".config" / "cairn" / "profiles.ini"
    file.parent.mkdir(parents=True)
    file.write_text(text)
    file.chmod(0o600)
    return file


def test_flag_beats_variable_beats_profile(
    keyed: tuple[ServerProcess, str], tmp_path: Path, unique: str
) -> None:
    server, admin = keyed
    live = server.address
    write_profiles(
        tmp_path,
        f"[default]\nurl = http://{live}\ntoken = {admin}\n\n"
        f"[dead]\nurl = http://{DEAD}\ntoken = {admin}\n\n"
        f"[team]\nhost = {live.split(':')[0]}\nport = {live.split(':')[1]}\ntls = false\n"
        f"token = {admin}\nproject = team-{unique}\n",
    )
    env = environment(tmp_path)
    ok("keys", "list", env=env)  # the [default] profile: its server and key

    # The key: variable over profile, flag over variable.
    bogus = {**env, "CAIRN_API_KEY": "cairn_000000000000_bogus"}
    assert "UNAUTHENTICATED" in failed("keys", "list", env=bogus)
    ok("keys", "list", "--api-key", admin, env=bogus)
    ok("--api-key", admin, "keys", "list", env=bogus)  # on the group, too

    # The address: variable over profile, flag over variable.
    dead_profile = {**env, "CAIRN_PROFILE": "dead"}
    assert "UNAVAILABLE" in failed("keys", "list", env=dead_profile)
    # The profile's key goes with the profile's server only: given another, pass one.
    elsewhere = {**dead_profile, "CAIRN_ADDRESS": live}
    assert "UNAUTHENTICATED" in failed("keys", "list", env=elsewhere)
    ok("keys", "list", env={**elsewhere, "CAIRN_API_KEY": admin})
    dead_variable = {**env, "CAIRN_ADDRESS": DEAD, "CAIRN_API_KEY": admin}
    assert "UNAVAILABLE" in failed("keys", "list", env=dead_variable)
    ok("keys", "list", "--address", live, env=dead_variable)
    ok("--target", live, "keys", "list", env=dead_variable)
    # A variable below its flag is not read, malformed or not (it stopped the command).
    malformed = {
        **dead_variable,
        "CAIRN_TIMEOUT": "abc",
        "CAIRN_TLS": "maybe",
        "CAIRN_ADDRESS": ":::",
    }
    ok("keys", "list", "--timeout", "5", "--no-tls", "--address", live, env=malformed)
    # The profile: --profile over CAIRN_PROFILE.
    assert "UNAVAILABLE" in failed("keys", "list", "--profile", "dead", env=env)
    ok("keys", "list", "--profile", "default", env=dead_profile)

    # The project: the profile's, unless a variable or flag says otherwise.
    ok("projects", "create", f"team-{unique}", env=env)
    ok("experiments", "create", f"e-{unique}", "--profile", "team", env=env)
    in_team = as_json("experiments", "list", "--project", f"team-{unique}", env=env)
    assert [e["name"] for e in in_team] == [f"e-{unique}"]
    as_default = {**env, "CAIRN_PROFILE": "team", "CAIRN_PROJECT": "default"}
    assert f"e-{unique}" not in {e["name"] for e in as_json("experiments", "list", env=as_default)}


def test_profiles_file_from_the_variable(keyed: tuple[ServerProcess, str], tmp_path: Path) -> None:
    server, admin = keyed
    elsewhere = tmp_path / "elsewhere.ini"
    elsewhere.write_text(f"[default]\nurl = http://{server.address}\ntoken = {admin}\n")
    elsewhere.chmod(0o600)
    ok("keys", "list", env=environment(tmp_path, CAIRN_PROFILES=str(elsewhere)))


def test_bad_profiles_are_one_line_and_a_usage_error(tmp_path: Path) -> None:
    """A profile that could not be used exited 1, as a failed call does, though a bad
    timeout from a profile is a usage error, as from the flag or the variable."""
    write_profiles(
        tmp_path,
        "[default]\nurl = ftp://nowhere\n[zero]\nurl = http://127.0.0.1:1\ntimeout = 0\n",
    )
    env = environment(tmp_path)
    for argv, why in (
        ([], "url"),
        (["--profile", "nope"], "no profile 'nope'"),
        (["--profile", "zero"], "timeout must be seconds above 0"),
    ):
        done = run_cairn("experiments", "list", *argv, env=env)
        assert done.returncode == 2, (argv, done.returncode, done.stderr)
        assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
        assert why in done.stderr, done.stderr


def test_a_default_profile_that_is_not_utf8_is_a_usage_error_naming_the_file(
    tmp_path: Path,
) -> None:
    """Read as the default, without --profile, the file failed with Python's codec
    message and status 1, naming no file; with --profile default it said where."""
    file = write_profiles(tmp_path, "")
    file.write_bytes(b"[default]\nurl = \xff\n")
    env = environment(tmp_path)
    for argv in ([], ["--profile", "default"]):
        done = run_cairn("experiments", "list", *argv, env=env)
        assert done.returncode == 2, (argv, done.returncode, done.stderr)
        assert done.stderr == f"Error: {file}: line 2 is not UTF-8 text\n", argv


def test_a_profiles_key_and_ca_stay_with_its_server(
    keyed: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    """docs/cli.md's recipe: another address with a TLS profile's project. The profile's
    CA is not forced on a plaintext address, and its key is not sent there."""
    server, admin = keyed
    ca = tmp_path / "prod-ca.pem"
    ca.write_text("not used: the address given is plaintext\n")
    write_profiles(
        tmp_path,
        f"[prod]\nhost = cairn.invalid\nport = 443\ntls = true\nca = {ca}\ntoken = {admin}\n",
    )
    env = environment(tmp_path, CAIRN_ADDRESS=server.address)
    assert "UNAUTHENTICATED" in failed("--profile", "prod", "experiments", "list", env=env)
    ok("--profile", "prod", "experiments", "list", "--api-key", admin, env=env)


def test_client_variables_never_reach_the_server_commands(tmp_path: Path) -> None:
    env = environment(tmp_path, CAIRN_TIMEOUT="abc", CAIRN_TLS="maybe", CAIRN_ADDRESS="::bad")
    for argv in (
        ["serve", "--help"],
        ["migrate", "--help"],
        ["keys", "create", "--user", "u", "--help"],
    ):
        done = run_cairn(*argv, env=env)
        assert done.returncode == 0, (argv, done.stderr)
        assert "--database-url" in done.stdout
    assert "| `CAIRN_LISTEN_ADDRESS` |" in ok("config", env=env)
    # A command that connects reads them, and says which one is wrong.
    done = run_cairn("experiments", "list", env={**env, "CAIRN_TLS": "true"})
    assert done.returncode == 2
    assert "CAIRN_TIMEOUT is not a valid value: give seconds" in done.stderr


def test_a_typo_in_keys_create_is_a_usage_error(tmp_path: Path) -> None:
    env = environment(tmp_path, CAIRN_ADDRESS=DEAD)
    typo = run_cairn("keys", "create", "--nmae", "laptop", env=env)
    assert typo.returncode == 2, typo.stderr
    assert "No such option '--nmae'" in typo.stderr
    assert "server" not in typo.stderr  # not taken for the database bootstrap
    extra = run_cairn("keys", "create", "laptop", env=env)
    assert extra.returncode == 2
    assert "unexpected extra argument (laptop)" in extra.stderr


def test_a_bootstrap_key_given_a_server_is_a_usage_error(tmp_path: Path) -> None:
    """`keys create --user` writes into a database and reaches no server: given an
    address, it made a key in a new database under the current folder, which the server
    asked for did not know."""
    env = environment(tmp_path)
    for connection in (["--address", DEAD], ["--api-key", "k"], ["--project", "p"]):
        done = run_cairn("keys", "create", "--user", "alice", *connection, env=env)
        assert done.returncode == 2, done.stderr
        assert "reaches no server" in done.stderr and connection[0] in done.stderr


def test_a_timeout_no_call_could_meet_is_a_usage_error(tmp_path: Path) -> None:
    env = environment(tmp_path, CAIRN_ADDRESS=DEAD)
    for timeout in ("-1", "0", "nan", "inf", "1e300"):
        done = run_cairn("experiments", "list", "--timeout", timeout, env=env)
        assert done.returncode == 2 and "--timeout" in done.stderr, (timeout, done.stderr)
        variable = run_cairn("experiments", "list", env={**env, "CAIRN_TIMEOUT": timeout})
        assert variable.returncode == 2 and "CAIRN_TIMEOUT" in variable.stderr
    # none is no deadline, as in a profile: the call goes (and finds no server).
    unreachable = run_cairn("experiments", "list", "--timeout", "none", "--address", DEAD, env=env)
    assert unreachable.returncode == 1 and "UNAVAILABLE" in unreachable.stderr


def test_an_address_the_client_cannot_read_is_a_usage_error(tmp_path: Path) -> None:
    """A malformed address failed the call instead (status 1, as an outage), and an
    empty --address was taken for none given: the default server was asked. So did an
    address list whose later entry could not be read (only the first was checked)."""
    env = environment(tmp_path, CAIRN_ADDRESS=DEAD)
    for address in ("grpc://127.0.0.1:1", "localhost:http", "", " ", "ipv4:127.0.0.1:1,h:x"):
        for option in ("--address", "--registry-address", "--artifacts-address"):
            done = run_cairn("experiments", "list", option, address, env=env)
            assert done.returncode == 2 and option in done.stderr, (address, done.stderr)
    for address, why in (
        ("localhost:http", "is not a number from 1 to 65535"),
        ("127.0.0.1\x01:1", "holds '\\x01'"),  # went to the resolver: UNAVAILABLE, status 1
    ):
        variable = run_cairn("experiments", "list", env={**env, "CAIRN_ADDRESS": address})
        assert variable.returncode == 2 and "CAIRN_ADDRESS" in variable.stderr, variable.stderr
        assert why in variable.stderr
    # The reason, not the text: a URL may hold a password.
    secret = "grpcs://user:s3cret@host:1"
    hidden = run_cairn("experiments", "list", env={**env, "CAIRN_ADDRESS": secret})
    assert hidden.returncode == 2 and "s3cret" not in hidden.stderr


def test_a_usage_error_never_echoes_an_address_or_a_variable(tmp_path: Path) -> None:
    """Read as a host and a port, an address was quoted whole (`the port of
    'admin:hunter2' ('hunter2')`), by flag and variable alike, and a variable that was
    not a value of its setting was echoed (`CAIRN_TIMEOUT='hunter2'`), though a URL's
    password never was."""
    env = environment(tmp_path, CAIRN_ADDRESS=DEAD)
    for argv, variables, named in (
        (["--address", "admin:hunter2"], {}, "--address"),
        (["--registry-address", "ipv4:admin:hunter2,1.2.3.4"], {}, "--registry-address"),
        ([], {"CAIRN_ADDRESS": "dns:///admin:hunter2"}, "CAIRN_ADDRESS"),
        ([], {"CAIRN_TIMEOUT": "hunter2"}, "CAIRN_TIMEOUT"),
        ([], {"CAIRN_TLS": "hunter2"}, "CAIRN_TLS"),
    ):
        done = run_cairn("experiments", "list", *argv, env={**env, **variables})
        assert done.returncode == 2, (argv, variables, done.stderr)
        assert named in done.stderr and "hunter2" not in done.stderr, done.stderr


def test_an_address_whose_scheme_contradicts_the_connection_is_a_usage_error(
    tmp_path: Path,
) -> None:
    """--no-tls silently overrode an https:// address, and a service's address whose
    scheme contradicted the server's connection exited 1, as an outage does."""
    env = environment(tmp_path, CAIRN_ADDRESS=DEAD)
    for argv in (
        ["--address", "https://127.0.0.1:1", "--no-tls"],
        ["--address", "http://127.0.0.1:1", "--tls"],
        ["--registry-address", "https://127.0.0.1:1"],
        ["--artifacts-address", "http://127.0.0.1:1", "--tls"],
    ):
        done = run_cairn("experiments", "list", *argv, env=env)
        assert done.returncode == 2, (argv, done.stderr)
        assert argv[0] in done.stderr and "choose one" in done.stderr, done.stderr
    secret = "https://user:s3cret@127.0.0.1:1"
    variable = run_cairn("experiments", "list", env={**env, "CAIRN_REGISTRY_ADDRESS": secret})
    assert variable.returncode == 2 and "CAIRN_REGISTRY_ADDRESS" in variable.stderr
    assert "s3cret" not in variable.stderr


def test_options_that_name_another_thing_are_usage_errors(tmp_path: Path) -> None:
    """models download built a URI from its options: --stage 1 downloaded version 1,
    --version production the Production stage. --max-points past 32 bits reached
    protobuf's bare 'Value out of range'."""
    env = environment(tmp_path, CAIRN_ADDRESS=DEAD)
    for argv in (
        ["models", "download", "churn", "--stage", "1"],
        ["models", "download", "churn", "--version", "production"],
        ["models", "download", "churn", "--alias", "x/1"],
        ["metrics", "history", "0" * 32, "acc", "--max-points", str(2**31)],
        # The registry orders by one key: a second replaced the first.
        ["models", "list", "--order-by", "name", "--order-by", "creation_timestamp"],
        ["models", "versions", "churn", "--order-by", "version_number", "--order-by", "x"],
    ):
        done = run_cairn(*argv, env=env)
        assert done.returncode == 2, (argv, done.stderr)
        assert "Invalid value" in done.stderr, done.stderr


def test_a_ca_file_is_for_tls_alone(tmp_path: Path) -> None:
    """--ca-file and CAIRN_CA_FILE made every plaintext command fail, naming the Python
    client's parameters; a profile's ca was ignored there already."""
    env = environment(tmp_path, CAIRN_ADDRESS=DEAD, CAIRN_CA_FILE=str(tmp_path / "ca.pem"))
    assert "UNAVAILABLE" in failed("experiments", "list", env=env)
    assert "UNAVAILABLE" in failed("experiments", "list", "--ca-file", "x.pem", env=env)


def test_a_profile_file_others_may_read_is_one_warning_line(tmp_path: Path) -> None:
    path = write_profiles(tmp_path, "[p]\nhost = 127.0.0.1\nport = 1\ntls = false\ntoken = k\n")
    path.chmod(0o644)
    done = run_cairn("experiments", "list", "--profile", "p", env=environment(tmp_path))
    warning = [line for line in done.stderr.splitlines() if "chmod 600" in line]
    assert len(warning) == 1 and warning[0].startswith("Warning: "), done.stderr
    assert ".py:" not in done.stderr


def test_connecting_mistakes_say_what_to_do(
    keyed: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    """gRPC's own words (connections to all backends failing) say nothing of the fix."""
    server, _ = keyed
    env = environment(tmp_path)
    refused = failed("experiments", "list", "--address", DEAD, env=env)
    assert f"no server answers at {DEAD}" in refused
    keyless = failed("experiments", "list", "--address", server.address, env=env)
    assert "API_KEY_MISSING" in keyless and "--api-key, CAIRN_API_KEY" in keyless
