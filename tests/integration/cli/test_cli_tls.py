"""`cairn` over TLS: the real executable against an in-process server that speaks TLS
only, trusting the test CA through --ca-file or CAIRN_CA_FILE."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.cli_helpers import environment, ok, run_cairn
from tests.e2e.conftest import tool
from tests.integration.test_tls import pki, tls_port  # noqa: F401 (fixtures)


async def test_tls_with_the_servers_ca(
    tls_port: int,  # noqa: F811
    pki: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    env = environment(tmp_path)
    address, ca = f"localhost:{tls_port}", str(pki["ca"])
    # The subprocess runs in a thread: the server answers on this test's event loop.
    await asyncio.to_thread(
        ok, "experiments", "list", "--address", address, "--tls", "--ca-file", ca, env=env
    )
    with_variables = {**env, "CAIRN_ADDRESS": f"https://{address}", "CAIRN_CA_FILE": ca}
    await asyncio.to_thread(ok, "experiments", "list", env=with_variables)

    # The server's own address: "localhost" may resolve to ::1 too, where nothing
    # listens, and gRPC's last error is then that refusal, not the handshake's.
    plain_address = f"127.0.0.1:{tls_port}"
    plaintext = await asyncio.to_thread(
        run_cairn, "experiments", "list", "--address", plain_address, "--timeout", "5", env=env
    )
    assert_unavailable(plaintext.returncode, plaintext.stderr)
    assert "may speak TLS: use https:// or --tls" in plaintext.stderr  # as it connects
    other = str(pki["other_ca"])
    untrusted = await asyncio.to_thread(
        run_cairn, "experiments", "list", "--address", address, "--tls", "--ca-file", other,
        "--timeout", "5", env=env,
    )  # fmt: skip
    assert_unavailable(untrusted.returncode, untrusted.stderr)
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


async def test_a_ca_given_on_standard_input_is_read_once(
    tls_port: int,  # noqa: F811
    pki: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """`--ca-file /dev/stdin` holds the CA once. The command read it to check it, then the
    client read it again, found the pipe at its end, and the handshake failed."""
    ran = await asyncio.to_thread(
        subprocess.run,
        [tool("cairn"), "experiments", "list", "--address", f"https://localhost:{tls_port}",
         "--ca-file", "/dev/stdin", "--output", "json"],
        input=pki["ca"].read_text(), env=environment(tmp_path), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert isinstance(json.loads(ran.stdout), list)  # the server's answer, whatever it holds


def assert_unavailable(status: int, stderr: str) -> None:
    # gRPC's core logs the failed handshake itself ("I... ssl_transport_security.cc"),
    # before the command's own line; GRPC_VERBOSITY=NONE silences it (docs/cli.md).
    assert status == 1
    assert stderr.splitlines()[-1].startswith("Error: UNAVAILABLE")
    assert "Traceback" not in stderr


async def test_a_profiles_ca_trusts_another_tls_address(
    tls_port: int,  # noqa: F811
    pki: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The CA is about whom to trust, not where to send a key: it serves any TLS address."""
    profiles = tmp_path / "profiles.ini"
    profiles.write_text(f"[prod]\nhost = cairn.invalid\nca = {pki['ca']}\n")
    env = environment(tmp_path, CAIRN_PROFILES=str(profiles), CAIRN_PROFILE="prod")
    await asyncio.to_thread(
        ok, "experiments", "list", "--address", f"https://localhost:{tls_port}", env=env
    )


@pytest.mark.parametrize("ca", ["not_pem", "absent.pem", "."])
def test_a_ca_file_that_holds_no_certificate_is_a_usage_error_naming_it(
    tmp_path: Path, ca: str
) -> None:
    """A CA file that is no PEM, none at the path or a directory failed the call with
    exit status 1 and OpenSSL's or the OS's own words ("no start line: cadata does not
    contain a certificate", "[Errno 2] ..."), naming neither the flag nor the profile."""
    (tmp_path / "not_pem").write_text("root:x:0:0:root:/root:/bin/bash\n")
    path = tmp_path / ca
    env = environment(tmp_path)
    flagged = run_cairn(
        "experiments", "list", "--address", "https://cairn.invalid", "--ca-file", str(path),
        env=env,
    )  # fmt: skip
    variable = run_cairn(
        "experiments", "list",
        env={**env, "CAIRN_ADDRESS": "https://cairn.invalid", "CAIRN_CA_FILE": str(path)},
    )  # fmt: skip
    profiles = tmp_path / "profiles.ini"
    profiles.write_text(f"[prod]\nhost = cairn.invalid\nca = {path}\n")
    profiles.chmod(0o600)
    profiled = run_cairn(
        "experiments", "list", env=environment(tmp_path, CAIRN_PROFILES=str(profiles))
        | {"CAIRN_PROFILE": "prod"},
    )  # fmt: skip
    for ran, named in (
        (flagged, "--ca-file: "),
        (variable, "CAIRN_CA_FILE: "),
        (profiled, f"{profiles} [prod]: ca: "),
    ):
        assert ran.returncode == 2, ran.stderr
        assert f"{named}{path}" in ran.stderr and "Traceback" not in ran.stderr
