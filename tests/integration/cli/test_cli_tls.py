"""`cairn` over TLS: the real executable against an in-process server that speaks TLS
only, trusting the test CA through --ca-file or CAIRN_CA_FILE."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.e2e.cli_helpers import environment, ok, run_cairn
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

    plaintext = await asyncio.to_thread(
        run_cairn, "experiments", "list", "--address", address, "--timeout", "5", env=env
    )
    assert_unavailable(plaintext.returncode, plaintext.stderr)
    other = str(pki["other_ca"])
    untrusted = await asyncio.to_thread(
        run_cairn, "experiments", "list", "--address", address, "--tls", "--ca-file", other,
        "--timeout", "5", env=env,
    )  # fmt: skip
    assert_unavailable(untrusted.returncode, untrusted.stderr)
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


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
