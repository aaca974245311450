"""Pure pieces of access control: key format, headers, peers, the failure limiter."""

from __future__ import annotations

import pytest

from cairn.artifacts.v1 import artifacts_service_pb2
from cairn.auth.v1 import auth_service_pb2
from cairn.registry.v1 import registry_pb2, registry_service_pb2
from cairn.tracking.v1 import tracking_service_pb2
from cairn_server.auth import keys
from cairn_server.auth.gate import presented_key
from cairn_server.auth.limiter import MAX_WINDOWS, FailureLimiter
from cairn_server.common.access import Role, role_table
from cairn_server.common.admission import project_of
from cairn_server.common.errors import Unauthenticated
from cairn_server.common.peers import client_address, counted_address


def test_generated_keys_are_unique_and_carry_their_prefix() -> None:
    made = [keys.generate() for _ in range(200)]
    assert len({key for key, _ in made}) == 200
    for key, prefix in made:
        assert keys.prefix_of(key) == prefix
        assert keys.as_prefix(key) == keys.as_prefix(prefix) == prefix
        # As the key begins: docs/cli.md's `cairn keys revoke cairn_5f0c2a9e81b4`.
        assert keys.as_prefix(f"cairn_{prefix}") == prefix
    assert keys.as_prefix("cairn_0123456789ab_") is None


@pytest.mark.parametrize(
    "text",
    ["", "cairn_", "cairn_0123456789ab_short", "CAIRN_0123456789ab_" + "a" * 43, "x" * 62],
)
def test_malformed_keys_have_no_prefix(text: str) -> None:
    assert keys.prefix_of(text) is None


def test_only_the_right_key_matches_its_digest() -> None:
    key, _ = keys.generate()
    stored = keys.digest(key)
    assert keys.matches(key, stored)
    assert not keys.matches(key + "x", stored)
    assert not keys.matches(key, None)


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ([("authorization", "Bearer abc")], "abc"),
        ([("authorization", "bearer  abc ")], "abc"),
        ([("x-api-key", "abc")], "abc"),
        ([("x-api-key", "abc"), ("authorization", "Bearer abc")], "abc"),
        ([("x-api-key", "abc"), ("authorization", "Bearer xyz")], ""),
        ([("authorization", "Basic abc")], "Basic abc"),
        ([("x-api-key-bin", b"abc"), ("x-api-key", "abc")], "abc"),
    ],
)
def test_the_presented_key(metadata, key: str) -> None:
    assert presented_key(metadata) == key


def test_no_key_is_missing() -> None:
    with pytest.raises(Unauthenticated) as raised:
        presented_key([("x-request-id", "r")])
    assert raised.value.reason == "API_KEY_MISSING"


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.7:51234", "10.0.0.7"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:[2001:db8::1]:443", "2001:db8::1"),
        ("ipv6:%5B2001:db8::1%5D:443", "2001:db8::1"),  # as recent gRPC reports it
        ("ipv6:%5Bfe80::1%25eth0%5D:443", "fe80::1%eth0"),
        ("unix:/tmp/s", "unix:/tmp/s"),
    ],
)
def test_client_address_drops_the_port(peer: str, address: str) -> None:
    assert client_address(peer) == address


def test_the_limiter_refuses_after_the_limit_until_the_window_ends() -> None:
    now = [0.0]
    limiter = FailureLimiter(3, 60, clock=lambda: now[0])
    for expected in (1, 2, 3):
        assert not limiter.blocked("a")
        assert limiter.record_failure("a") == expected
    assert limiter.blocked("a")
    assert not limiter.blocked("b")
    now[0] = 59.9
    assert limiter.blocked("a")
    now[0] = 60.0
    assert not limiter.blocked("a")
    assert limiter.record_failure("a") == 1


def test_the_limiter_forgets_old_addresses_when_it_grows() -> None:
    now = [0.0]
    limiter = FailureLimiter(1, 10, clock=lambda: now[0])
    for n in range(10_000):
        limiter.record_failure(f"old-{n}")
    now[0] = 11
    limiter.record_failure("new")
    assert len(limiter._windows) == 1


def test_a_flood_of_new_addresses_keeps_the_table_bounded() -> None:
    # Nothing expires: past the cap, new addresses share one overflow window, so the
    # table stops growing and a failure costs the same however many came before (it
    # once scanned the whole table and kept every window: 30,000 addresses took 25 s).
    now = [0.0]
    limiter = FailureLimiter(1, 60, clock=lambda: now[0])
    burst = [f"10.{n >> 16}.{n >> 8 & 255}.{n & 255}" for n in range(MAX_WINDOWS + 100)]
    largest = 0
    for n, address in enumerate(burst):
        now[0] = n / 1000
        limiter.record_failure(address)
        largest = max(largest, len(limiter._windows))
    assert largest == MAX_WINDOWS
    assert list(limiter._windows) == burst[:MAX_WINDOWS]  # none pushed out early
    assert all(limiter.blocked(address) for address in (burst[0], burst[-1], "10.255.0.1"))


def test_cycling_more_addresses_than_the_table_holds_is_still_refused() -> None:
    # Evicting the oldest window to make room let a flood of MAX_WINDOWS + 1 addresses
    # push every window out before it reached the limit: nothing was ever refused.
    limiter = FailureLimiter(3, 60, clock=lambda: 0.0)
    addresses = [f"10.{n >> 16}.{n >> 8 & 255}.{n & 255}" for n in range(MAX_WINDOWS + 1)]
    for _ in range(3):
        for address in addresses:
            limiter.record_failure(address)
    assert all(limiter.blocked(address) for address in addresses)
    assert limiter.blocked("192.0.2.1")  # a newcomer counts in the flood's overflow


def test_a_blocked_address_is_not_evicted_by_new_ones() -> None:
    now = [0.0]
    limiter = FailureLimiter(2, 60, clock=lambda: now[0])
    limiter.record_failure("192.0.2.1")
    limiter.record_failure("192.0.2.1")
    for n in range(MAX_WINDOWS):
        now[0] = n / 1000
        limiter.record_failure(f"10.0.{n >> 8}.{n & 255}")
    assert limiter.blocked("192.0.2.1")
    now[0] = 60  # its window ends when it would have: blocked for the window, no longer
    assert not limiter.blocked("192.0.2.1")


def test_the_overflow_window_counts_only_while_the_table_is_full() -> None:
    now = [0.0]
    limiter = FailureLimiter(1, 60, clock=lambda: now[0])
    for n in range(MAX_WINDOWS):
        limiter.record_failure(f"10.0.{n >> 8}.{n & 255}")
    now[0] = 30
    assert limiter.record_failure("192.0.2.1") == 1  # in the overflow window
    assert limiter.blocked("192.0.2.2")
    now[0] = 60  # the table's windows end; the overflow's runs on until 90
    assert not limiter.blocked("192.0.2.2")
    assert limiter.record_failure("192.0.2.2") == 1
    assert list(limiter._windows) == ["192.0.2.2"]


def test_expired_windows_are_dropped_from_the_front_only() -> None:
    now = [0.0]
    limiter = FailureLimiter(1, 10, clock=lambda: now[0])
    for n in range(6):
        now[0] = n
        limiter.record_failure(f"10.0.0.{n}")
    now[0] = 13  # the windows of 10.0.0.0 to .3 have ended
    limiter.record_failure("10.0.1.1")
    assert list(limiter._windows) == ["10.0.0.4", "10.0.0.5", "10.0.1.1"]


@pytest.mark.parametrize(
    ("address", "counted"),
    [
        ("10.0.0.7", "10.0.0.7"),
        ("2001:db8:0:7:1:2:3:4", "2001:db8:0:7::/64"),
        ("::ffff:10.0.0.7", "10.0.0.7"),  # an IPv4 client of a dual-stack socket
        ("unix:/tmp/s", "unix:/tmp/s"),
    ],
)
def test_ipv6_addresses_are_counted_per_64(address: str, counted: str) -> None:
    assert counted_address(address) == counted


def test_the_addresses_of_one_ipv6_64_share_a_window() -> None:
    limiter = FailureLimiter(10, 60)
    for n in range(30):
        limiter.record_failure(f"2001:db8::{n:x}")
    assert len(limiter._windows) == 1
    assert limiter.blocked("2001:db8::ffff")
    assert not limiter.blocked("2001:db8:0:1::1")


@pytest.mark.parametrize(
    ("request_message", "project"),
    [
        (tracking_service_pb2.GetRunRequest(project="p", run_id="r"), "p"),
        (tracking_service_pb2.GetRunRequest(run_id="r"), ""),
        (
            registry_service_pb2.CreateRegisteredModelRequest(
                registered_model=registry_pb2.RegisteredModel(project="q", name="m")
            ),
            "q",
        ),
        (registry_service_pb2.CreateRegisteredModelRequest(), None),
        (
            artifacts_service_pb2.UploadRequest(
                header=artifacts_service_pb2.UploadHeader(project="r", path="x")
            ),
            "r",
        ),
        (artifacts_service_pb2.UploadRequest(chunk=b"data"), None),
        (auth_service_pb2.CreateApiKeyRequest(name="k"), None),
        (None, None),
    ],
)
def test_the_project_a_request_names(request_message, project: str | None) -> None:
    assert project_of(request_message) == project


def test_a_role_table_lists_each_method_once() -> None:
    assert role_table(viewer=["Get"], editor=["Put"]) == {"Get": Role.VIEWER, "Put": Role.EDITOR}
    with pytest.raises(ValueError, match="Get is listed twice"):
        role_table(viewer=["Get"], admin=["Get"])


def test_a_server_refuses_a_service_whose_role_table_has_a_gap() -> None:
    import dataclasses

    from cairn_server import catalog
    from cairn_server.common.server import role_table as server_role_table

    tracking = catalog.SERVICES["tracking"]
    gap = {name: role for name, role in tracking.roles.items() if name != "LogBatch"}
    with pytest.raises(ValueError, match="LogBatch"):
        server_role_table([dataclasses.replace(tracking, roles=gap)])
    # Every RPC of every service, each once.
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    specs = catalog.select([])
    rpcs = sum(len(pool.FindServiceByName(spec.full_name).methods) for spec in specs)
    assert len(server_role_table(specs)) == rpcs


def test_every_project_scoped_rpc_names_its_project_in_exactly_one_place() -> None:
    # The gate checks the role in the project that project_of finds; a request with a
    # second place for a project could name one to the gate and another to the handler.
    from google.protobuf import descriptor_pool

    from cairn_server import catalog
    from cairn_server.common.access import PROJECT_ROLES

    for spec in catalog.select([]):
        service = descriptor_pool.Default().FindServiceByName(spec.full_name)
        for method in service.methods:
            fields = method.input_type.fields
            places = [f.name for f in fields if f.name == "project"] + [
                f.name
                for f in fields
                if f.message_type is not None and "project" in f.message_type.fields_by_name
            ]
            if spec.roles[method.name] in PROJECT_ROLES:
                assert len(places) == 1, (method.full_name, places)
            else:
                assert places == [], (method.full_name, places)


def test_a_server_without_the_auth_service_refuses_to_start() -> None:
    from cairn_server import catalog
    from cairn_server.common.config import Config
    from cairn_server.common.server import CairnServer

    # No gate, no server: the auth service is what admits every call.
    with pytest.raises(ValueError, match="gate"):
        CairnServer(Config(), [catalog.SERVICES["tracking"]], pool=None)
