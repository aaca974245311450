"""The hints the command line adds to the commonest mistakes of connecting: each names
the address gRPC says failed, and a fix that fits the failure."""

from __future__ import annotations

import pytest

from cairn.cli._calls import _hint
from cairn.cli._connection import Connection
from cairn.exceptions import CairnError, UnauthenticatedError, UnavailableError, UnimplementedError

PLAIN = Connection("127.0.0.1", 1, False, None, None, "bearer", "default", 30.0, {})
TLS = Connection("cairn.example.com", 443, True, None, None, "bearer", "default", 30.0, {})


def _unavailable(detail: str) -> UnavailableError:
    return UnavailableError(f"connections to all backends failing; last error: {detail}")


@pytest.mark.parametrize(
    ("error", "connection", "hint"),
    [
        (
            _unavailable(
                "UNKNOWN: ipv4:127.0.0.1:2: Failed to connect to remote host: Connection refused"
            ),
            PLAIN,
            "no server answers at 127.0.0.1:2",  # the registry's, served apart
        ),
        (
            _unavailable(
                "UNKNOWN: ipv6:%5B::1%5D:2: Failed to connect to remote host: Connection refused"
            ),
            PLAIN,
            "no server answers at [::1]:2",  # gRPC's %5B and %5D were shown as they came
        ),
        (
            _unavailable("UNAVAILABLE: ipv4:127.0.0.1:51716: Socket closed"),
            PLAIN,
            "127.0.0.1:51716 may speak TLS: use https:// or --tls",
        ),
        (
            _unavailable(
                "UNAVAILABLE: ipv4:10.0.0.5:443: Tls handshake failed "
                "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: WRONG_VERSION_NUMBER"
            ),
            TLS,
            "10.0.0.5:443 does not speak TLS",
        ),
        (
            _unavailable(
                "UNAVAILABLE: ipv4:10.0.0.5:443: Tls handshake failed "
                "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED"
            ),
            TLS,
            "certificate is not trusted here: give its CA with --ca-file",
        ),
        (UnimplementedError("Method not found!"), PLAIN, "does not serve this service"),
        (
            UnauthenticatedError("this server needs an API key", reason="API_KEY_MISSING"),
            PLAIN,
            "--api-key, CAIRN_API_KEY",
        ),
    ],
)
def test_a_hint_fits_the_failure_and_names_its_address(
    error: CairnError, connection: Connection, hint: str
) -> None:
    assert hint in _hint(error, connection)


def test_an_untrusted_certificate_is_never_told_to_turn_tls_off() -> None:
    untrusted = _unavailable(
        "UNAVAILABLE: ipv4:10.0.0.5:443: Tls handshake failed: CERTIFICATE_VERIFY_FAILED"
    )
    assert "--no-tls" not in _hint(untrusted, TLS)


@pytest.mark.parametrize(
    "lost", ["Stream removed (Socket closed)", "Socket closed", "Stream removed"]
)
def test_a_connection_lost_mid_call_is_never_blamed_on_tls(lost: str) -> None:
    """A server gone mid-download closed a connection that was made: no TLS mismatch,
    which ends the connecting itself ("connections to all backends failing")."""
    assert "TLS" not in _hint(UnavailableError(lost), PLAIN)
