"""One server for the fuzz tier, hosting every service as `make run` does, but with API
keys required and artifacts on S3 (moto): real PostgreSQL (a server of its own), real S3
protocol, real gRPC.

Projects seeded on it: the one the fuzzer calls into, one for each RPC that deletes (so
what one deletes is still there for the others), and one the regression corpus reads
from, so the corpus holds whatever order the tests run in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import asyncpg
import grpc
import pgserver
import pytest
import pytest_asyncio
from hypothesis import configuration

from cairn_server import catalog
from cairn_server.auth.store import AuthStore
from cairn_server.common import database
from cairn_server.common.config import Config
from cairn_server.common.server import CairnServer, migrate
from tests.conftest import with_overrides

from ._messages import Known
from ._probes import Keys
from ._rpc import TALLY, Rpc, all_rpcs
from ._world import Seeder, known, seed

# Above the server's 16 MiB, so the server's own limit is what a big message meets.
CLIENT_MESSAGE_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class Target:
    """The server under test, a channel to it, and what one seeded project holds."""

    port: int
    channel: grpc.aio.Channel
    keys: Keys
    known: Known
    seeder: Seeder


@pytest.fixture(scope="session", autouse=True)
def _hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hypothesis keeps caches (its charmap) under a home directory: a temporary one,
    never a .hypothesis folder in the checkout."""
    configuration.set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))


@pytest.fixture(scope="package")
def fuzz_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL of the fuzz tier's own: what the fuzzer writes (into any project it
    names, "default" too, as an empty name means) stays out of the other tests' way."""
    server = pgserver.get_server(tmp_path_factory.mktemp("pg-fuzz"), cleanup_mode="delete")
    yield server.get_uri()


@pytest.fixture(scope="package")
def fuzz_config(
    tmp_path_factory: pytest.TempPathFactory, s3_config: Config, fuzz_postgres: str
) -> Config:
    return with_overrides(
        s3_config,
        database_url=fuzz_postgres,
        data_dir=str(tmp_path_factory.mktemp("cairn-fuzz-data")),
        auth="api_key",
        # The fuzzer presents bad keys on purpose; being locked out is not what it tests.
        auth_failure_limit=10**6,
        s3_prefix="fuzz",
    )


@pytest_asyncio.fixture(scope="package")
async def fuzz_pool(fuzz_config: Config) -> AsyncIterator[asyncpg.Pool]:
    pool = await database.create_pool(fuzz_config.database_url, fuzz_config)
    await migrate(pool, catalog.select([]))
    yield pool
    await database.close_pool(pool)


@pytest_asyncio.fixture(scope="package")
async def fuzz_server(fuzz_config: Config, fuzz_pool: asyncpg.Pool) -> AsyncIterator[int]:
    server = CairnServer(fuzz_config, catalog.select([]), fuzz_pool)
    port = await server.start()
    yield port
    await server.stop(grace=1.0)


@pytest_asyncio.fixture(scope="package")
async def fuzz_channel(fuzz_server: int) -> AsyncIterator[grpc.aio.Channel]:
    options = [
        ("grpc.max_receive_message_length", CLIENT_MESSAGE_LIMIT),
        ("grpc.max_send_message_length", CLIENT_MESSAGE_LIMIT),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fuzz_server}", options=options) as channel:
        yield channel


@pytest_asyncio.fixture(scope="package")
async def admin_key(fuzz_pool: asyncpg.Pool) -> str:
    key, _ = await AuthStore(fuzz_pool).create_key("fuzz-admin", "fuzz", None, global_admin=True)
    return key


@pytest_asyncio.fixture(scope="package")
async def seal_keys(fuzz_pool: asyncpg.Pool) -> dict[str, bytes]:
    """Each service's page-token key (by full name), to forge tokens past the seal."""
    return {
        spec.full_name: await fuzz_pool.fetchval(
            f'SELECT secret FROM "{spec.schema}".page_token_key'
        )
        for spec in catalog.select([])
    }


async def _target(
    port: int,
    channel: grpc.aio.Channel,
    admin: str,
    project: str,
    seal_keys: dict[str, bytes],
    discover: bool = False,
) -> Target:
    seeder, keys = await seed(channel, admin, project, f"{project}-viewer", seal_keys)
    fields = await seeder.filter_fields(channel) if discover else {}
    return Target(port, channel, keys, known(seeder, fields), seeder)


@pytest_asyncio.fixture(scope="package")
async def fuzzed(
    fuzz_server: int, fuzz_channel: grpc.aio.Channel, admin_key: str, seal_keys: dict[str, bytes]
) -> Target:
    """The project the fuzzer calls into (and may wreck), with what its lists' filters
    accept found out."""
    return await _target(fuzz_server, fuzz_channel, admin_key, "fuzz", seal_keys, discover=True)


@pytest_asyncio.fixture(scope="package")
async def targets(
    fuzz_server: int,
    fuzz_channel: grpc.aio.Channel,
    admin_key: str,
    seal_keys: dict[str, bytes],
    fuzzed: Target,
) -> Callable[[Rpc], Target]:
    """The project each RPC is fuzzed in: one of its own for each RPC that deletes,
    so what it deletes is still there for the RPCs fuzzed after it."""
    deleting = [rpc for rpc in all_rpcs() if rpc.method.name.startswith("Delete")]
    own = await asyncio.gather(
        *(
            _target(
                fuzz_server,
                fuzz_channel,
                admin_key,
                f"fuzz-{rpc.method.name.lower()}",
                seal_keys,
            )
            for rpc in deleting
        )
    )
    by_name = {rpc.name: target for rpc, target in zip(deleting, own, strict=True)}
    return lambda rpc: by_name.get(rpc.name, fuzzed)


@pytest_asyncio.fixture(scope="package")
async def corpus(
    fuzz_server: int, fuzz_channel: grpc.aio.Channel, admin_key: str, seal_keys: dict[str, bytes]
) -> Target:
    """The project the regression corpus reads its real page tokens from."""
    return await _target(fuzz_server, fuzz_channel, admin_key, "corpus", seal_keys)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The status codes of every fuzz call of this run, and each distinct failure with
    its shortest input: what the closing note of a hardening issue quotes."""
    if not TALLY.total:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fuzz tier")
    rate = TALLY.total / TALLY.seconds if TALLY.seconds else 0.0
    write(f"{TALLY.total} fuzz calls in {TALLY.seconds:.1f} s of calling ({rate:.0f}/s)")
    write("status codes: " + ", ".join(f"{c}={n}" for c, n in TALLY.codes.most_common()))
    for (code, reason), count in sorted(TALLY.reasons.items()):
        write(f"  {code:<20} {reason or '-':<28} {count}")
    if TALLY.failures:
        write(f"{len(TALLY.failures)} distinct failures (RPC, code, reason, cause):")
        for (rpc, code, reason, cause), (count, shown) in sorted(TALLY.failures.items()):
            write(f"  {rpc}: {code} {reason or '-'} x{count}: {cause}")
            write(f"      input: {shown}")
