"""The fuzz property: whatever arrives — any message of any RPC with hostile values, its
bytes corrupted, invalid UTF-8, forged page tokens, streams out of order, from an admin,
a viewer, nobody or a forger — the answer is a status the caller can act on, never
INTERNAL or UNKNOWN, and the server stays healthy.

Hypothesis generates a fixed number of probes per RPC (seeded by the RPC's name, so
every run sends the same ones); they are all sent, and the test fails after the last
with every distinct failure and its shortest input. A failing run thus costs the same
time as a passing one and reports everything at once, where failing on the first bad
answer would shrink one input and hide the rest.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, seed, settings

from cairn.auth.v1 import auth_service_pb2
from cairn_server import catalog

from ._messages import Messages
from ._probes import Probe, probes
from ._property import CALL_TIMEOUT, exceptions_logged, failure
from ._rpc import TALLY, Outcome, Rpc, all_rpcs, call
from .conftest import Target

RPCS = all_rpcs()
# At least this many calls per run: 67 RPCs x 80 = 5,360, sent in about 35 s on two
# cores (generating them takes as long, in a thread alongside).
MIN_CALLS = 5000
PROBES_PER_RPC = max(80, -(-MIN_CALLS // len(RPCS)))
CONCURRENCY = 8


def generate(rpc: Rpc, target: Target) -> list[Probe]:
    """PROBES_PER_RPC probes of rpc, the same on every run."""
    found: list[Probe] = []

    @seed(zlib.crc32(rpc.name.encode()))
    @settings(
        max_examples=PROBES_PER_RPC,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(probes(rpc, Messages(target.known), target.keys))
    def collect(probe: Probe) -> None:
        found.append(probe)

    collect()
    return found


class Prefetcher:
    """Generates the probes of the next RPC in a worker thread while the current ones
    are sent: generating is as slow as sending, and the two overlap well (the sending
    waits on PostgreSQL, S3 and the network most of the time)."""

    def __init__(self, target_of: Callable[[Rpc], Target]) -> None:
        self._target_of = target_of
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fuzz-generate")
        self._pending: dict[str, Future[list[Probe]]] = {}

    def _submit(self, rpc: Rpc) -> Future[list[Probe]]:
        if rpc.name not in self._pending:
            self._pending[rpc.name] = self._pool.submit(generate, rpc, self._target_of(rpc))
        return self._pending[rpc.name]

    async def batch(self, rpc: Rpc) -> list[Probe]:
        future = self._submit(rpc)
        following = RPCS.index(rpc) + 1
        if following < len(RPCS):
            self._submit(RPCS[following])
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


@pytest.fixture(scope="module")
def prefetcher(targets: Callable[[Rpc], Target]) -> Iterator[Prefetcher]:
    prefetcher = Prefetcher(targets)
    yield prefetcher
    prefetcher.close()


async def send_all(target: Target, rpc: Rpc, batch: list[Probe]) -> list[Outcome]:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(probe: Probe) -> Outcome:
        async with limit:
            return await call(
                target.channel, rpc, probe.payload, probe.metadata, timeout=CALL_TIMEOUT
            )

    return await asyncio.gather(*(one(p) for p in batch))


async def serving(target: Target, service: str = "") -> int:
    health = health_pb2_grpc.HealthStub(target.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return reply.status


@pytest.mark.parametrize("rpc", RPCS, ids=[r.name for r in RPCS])
async def test_no_call_answers_internal_or_unknown(
    rpc: Rpc, targets: Callable[[Rpc], Target], prefetcher: Prefetcher
) -> None:
    fuzzed = targets(rpc)
    batch = await prefetcher.batch(rpc)
    assert len(batch) == PROBES_PER_RPC  # hypothesis ran out of distinct probes?
    started = time.perf_counter()
    with structlog.testing.capture_logs() as logged:
        outcomes = await send_all(fuzzed, rpc, batch)
    TALLY.seconds += time.perf_counter() - started
    exceptions = exceptions_logged(logged)
    failed = []
    for probe, outcome in zip(batch, outcomes, strict=True):
        TALLY.add(outcome)
        cause = failure(outcome, exceptions)
        if cause is not None:
            TALLY.fail(rpc, outcome, cause, probe.describe(rpc))
            failed.append(
                f"{outcome.code.name} {outcome.reason} {cause}\n    {probe.describe(rpc)}"
            )
    assert await serving(fuzzed) == health_pb2.HealthCheckResponse.SERVING
    assert not failed, f"{len(failed)} of {len(batch)} calls failed:\n" + "\n".join(
        sorted(set(failed), key=len)[:20]
    )


async def test_the_server_still_serves_after_the_fuzz(fuzzed: Target) -> None:
    for name in ["", *(spec.full_name for spec in catalog.select([]))]:
        assert await serving(fuzzed, name) == health_pb2.HealthCheckResponse.SERVING, name
    # And answers a real call, for a project the fuzzer could not have wrecked.
    reply = await fuzzed.seeder.auth.GetProjects(
        auth_service_pb2.GetProjectsRequest(), metadata=fuzzed.seeder.metadata, timeout=10
    )
    assert "fuzz" in {p.name for p in reply.projects}
