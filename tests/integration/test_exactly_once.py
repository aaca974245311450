"""Writes whose answers are lost after they committed: the client retries with the same
request id and gets the first answer, and the write is stored once. Through a proxy
that cuts the connection as the server's answer begins (or after its headers)."""

import asyncio
import datetime
import json
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from google.protobuf import descriptor_pool

import cairn
from cairn import _channels, _headers
from cairn.exceptions import InvalidArgumentError, UnavailableError
from cairn.types import (
    Metric,
    ModelArtifact,
    ModelVersion,
    OperationState,
    RegisteredModel,
    ViewType,
)
from cairn_server import catalog
from cairn_server.common.idempotency import READS
from tests.conftest import another_transaction, eventually, holds_up_another, new_project
from tests.proxy import AnswerDroppingProxy

T = TypeVar("T")


@pytest.fixture
async def proxy(server_port: int) -> AsyncIterator[AnswerDroppingProxy]:
    proxy = AnswerDroppingProxy(server_port)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_tracking_writes_apply_once_when_their_answers_are_lost(
    proxy: AnswerDroppingProxy, unique: str
) -> None:
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", proxy.port) as tracking:
        proxy.drop_next()
        experiment_id = await tracking.create_experiment(f"once-{unique}")  # not ALREADY_EXISTS
        proxy.drop_next()
        run = await tracking.create_run(experiment_id)
        run_id = run.info.run_id
        for write in (
            lambda: tracking.log_metric(run_id, "loss", 0.5, step=1),
            lambda: tracking.log_param(run_id, "lr", "0.1"),
            lambda: tracking.set_tag(run_id, "team", "vision"),
            lambda: tracking.set_experiment_tag(experiment_id, "owner", "ml"),
            lambda: tracking.delete_run(run_id),  # not NOT_FOUND or FAILED_PRECONDITION
        ):
            proxy.drop_next()
            await write()
        assert proxy.dropped == 7
        runs = await tracking.search_runs([experiment_id], run_view_type=cairn.types.ViewType.ALL)
        assert [r.info.run_id for r in runs] == [run_id]
        assert [m.value for m in await tracking.get_metric_history(run_id, "loss")] == [0.5]


@pytest.fixture
async def late_proxy(server_port: int) -> AsyncIterator[AnswerDroppingProxy]:
    """A proxy that loses answers once their headers reached the client."""
    proxy = AnswerDroppingProxy(server_port, after_headers=True)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_writes_whose_reply_is_lost_after_its_headers_apply_once(
    late_proxy: AnswerDroppingProxy, unique: str
) -> None:
    """The connection breaks after the answer's headers, before its message. gRPC held
    such a call committed and did not send it again: create_run raised UNAVAILABLE for
    the run it made (and, called again, made a second), create_experiment called again
    was ALREADY_EXISTS, upsert_model_version MODEL_VERSION_ALREADY_EXISTS."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", late_proxy.port) as tracking:
        late_proxy.drop_next()
        experiment_id = await tracking.create_experiment(f"late-{unique}")
        late_proxy.drop_next()
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        runs = await tracking.search_runs([experiment_id], run_view_type=ViewType.ALL)
        assert [r.info.run_id for r in runs] == [run_id]
    async with cairn.ModelRegistryAPIClient.insecure_connection(
        "127.0.0.1", late_proxy.port
    ) as registry:
        model = await registry.upsert_registered_model(RegisteredModel(f"late-{unique}"))
        assert model.id is not None
        late_proxy.drop_next()
        version = await registry.upsert_model_version(ModelVersion("v1"), model.id)
        assert [v.id for v in await registry.get_model_versions(model.id)] == [version.id]
    assert late_proxy.dropped == 3


async def _deadlock_lost_by(
    pool: asyncpg.Pool, call: Awaitable[T], first: str, then: str, *args: object
) -> T:
    """call's answer, once its session was a deadlock's victim: another transaction runs
    `first`, which call then waits for, and `then` (with args), which waits for call. The
    call's session, waiting first, is the one PostgreSQL rolls back."""
    async with another_transaction(pool) as other:
        await other.execute(first)
        task = asyncio.ensure_future(call)
        await eventually(lambda: holds_up_another(other), what="the call waiting")
        await other.execute(then, *args)
    return await task


async def test_a_write_that_lost_a_deadlock_is_sent_again_and_applied_once(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """A write PostgreSQL rolled back as a deadlock's victim applied nothing (ABORTED
    TRANSACTION_CONFLICT); the client raised it, where a call sent again under its
    request id is stored once. The batch holds its experiment's row (key share) and
    waits for its run's, which another transaction holds; that one then asks for the
    experiment's row."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        experiment_id = await tracking.create_experiment(f"deadlock-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        await _deadlock_lost_by(
            pool,
            tracking.log_batch(run_id, metrics=[Metric("loss", 0.5, 1, 0)]),
            f"SELECT 1 FROM tracking.run_sizes WHERE run_id = '{run_id}' FOR UPDATE",
            "SELECT 1 FROM tracking.experiments WHERE experiment_id = $1 FOR UPDATE",
            int(experiment_id),
        )
        history = await tracking.get_metric_history(run_id, "loss")
        assert [(m.value, m.step) for m in history] == [(0.5, 0)]


async def test_an_upload_that_lost_a_deadlock_is_sent_again_and_published_once(
    server_port: int, pool: asyncpg.Pool, unique: str
) -> None:
    """The upload's publication, waiting on the objects table with its path's advisory
    lock held, was the victim: uploads were sent again after UNAVAILABLE only, and the
    caller got ABORTED TRANSACTION_CONFLICT for bytes it could send again."""
    project = await new_project(server_port, f"deadlock-{unique}")
    async with cairn.ArtifactClient.insecure_connection(
        "127.0.0.1", server_port, project=project
    ) as store:
        info = await _deadlock_lost_by(
            pool,
            store.upload("d/f.txt", b"hello"),
            "LOCK TABLE artifacts.objects IN SHARE MODE",
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"{project}/d/f.txt",
        )
        assert info.size == 5
        assert await store.read("d/f.txt") == b"hello"
        assert [o.path for o in await store.list("d/")] == ["d/f.txt"]


async def test_a_write_whose_replies_are_all_lost_is_sent_a_bounded_number_of_times(
    late_proxy: AnswerDroppingProxy, unique: str
) -> None:
    """Before, it was sent once and raised UNAVAILABLE, done."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", late_proxy.port) as tracking:
        late_proxy.drop_next(_channels.ATTEMPTS + 1)
        with pytest.raises(UnavailableError):
            await tracking.create_experiment(f"lost-{unique}")
        assert late_proxy.dropped == _channels.ATTEMPTS
        late_proxy.drop_next(0)
        assert await tracking.get_experiment_by_name(f"lost-{unique}") is not None


async def test_a_runs_end_keeps_its_request_id_when_the_channels_retries_run_out(
    late_proxy: AnswerDroppingProxy, pool, unique: str
) -> None:
    """ActiveRun sends its end again after the channel's attempts, as it sends its
    creation: under a new request id, so an end stored whose answers were all lost was
    applied again (its end time stamped anew)."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", late_proxy.port) as tracking:
        experiment_id = await tracking.create_experiment(f"end-{unique}")
        began = await pool.fetchval("SELECT clock_timestamp()")
        async with tracking.start_run(experiment_id) as run:
            late_proxy.drop_next(_channels.ATTEMPTS + 1)  # every answer to the end's first
        assert late_proxy.dropped == _channels.ATTEMPTS + 1
        assert (await tracking.get_run(run.run_id)).info.status == cairn.types.RunStatus.FINISHED
    ends = await pool.fetchval(
        """SELECT count(*) FROM tracking.requests
           WHERE method LIKE '%UpdateRun' AND create_time >= $1""",
        began,
    )
    assert ends == 1


async def test_a_runs_end_kept_after_its_answers_were_lost_is_synced_as_it_was_stored(
    late_proxy: AnswerDroppingProxy, server_port: int, unique: str, tmp_path
) -> None:
    """Its end stored, every answer lost until flush_timeout ran out: the run keeps its
    end in its journal, and a sync stored it again, at the time of the journal's write,
    later than the one stored."""
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", late_proxy.port) as tracking:
        experiment_id = await tracking.create_experiment(f"kept-end-{unique}")
        async with tracking.start_run(experiment_id, journal_dir=tmp_path, flush_timeout=2) as run:
            late_proxy.drop_next(1000)  # every answer from the end on
        assert run.journal is not None and late_proxy.dropped > 0
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as direct:
        stored = (await direct.get_run(run.run_id)).info
        assert stored.status == cairn.types.RunStatus.FINISHED  # the end was stored
        await direct.sync_journal(tmp_path)
        synced = (await direct.get_run(run.run_id)).info
    assert (synced.status, synced.end_time) == (stored.status, stored.end_time)


async def test_every_other_tracking_write_is_answered_as_the_first_time(
    proxy: AnswerDroppingProxy, unique: str
) -> None:
    """Writes whose repeat would fail if applied again (renames, deletes, restores)."""
    from cairn.types import Metric, RunInput, RunStatus

    async with cairn.TrackingClient.insecure_connection("127.0.0.1", proxy.port) as tracking:
        experiment_id = await tracking.create_experiment(f"rest-{unique}")
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        await tracking.set_tag(run_id, "gone", "x")
        await tracking.set_experiment_tag(experiment_id, "gone", "x")
        writes = [
            lambda: tracking.rename_experiment(experiment_id, f"renamed-{unique}"),
            lambda: tracking.delete_experiment_tag(experiment_id, "gone"),
            lambda: tracking.delete_tag(run_id, "gone"),
            lambda: tracking.log_batch(run_id, [Metric("acc", 0.9, 1, 1)]),
            lambda: tracking.log_inputs(run_id, [RunInput(f"cairn-artifacts://default/{unique}")]),
            lambda: tracking.update_run(run_id, name=f"named-{unique}"),
            lambda: tracking.set_terminated(run_id, RunStatus.FINISHED),
            lambda: tracking.delete_run(run_id),
            lambda: tracking.restore_run(run_id),
            lambda: tracking.delete_experiment(experiment_id),
            lambda: tracking.restore_experiment(experiment_id),
        ]
        for write in writes:
            proxy.drop_next()
            await write()
        assert proxy.dropped == len(writes)
        run = await tracking.get_run(run_id)
        assert run.info.run_name == f"named-{unique}" and run.info.status == RunStatus.FINISHED
        assert (await tracking.get_experiment(experiment_id)).name == f"renamed-{unique}"
        assert len(await tracking.get_metric_history(run_id, "acc")) == 1


async def test_registry_writes_apply_once_when_their_answers_are_lost(
    proxy: AnswerDroppingProxy, server_port: int, unique: str
) -> None:
    """Each write through one RPC of its own (MLflow's by-name methods look the model up
    first, and the proxy would drop that answer instead)."""
    from cairn.registry.v1 import registry_service_pb2 as api

    async with cairn.ModelRegistryAPIClient.insecure_connection(
        "127.0.0.1", proxy.port
    ) as registry:

        async def lost(method: str, request):
            proxy.drop_next()
            return await registry._transport.unary(getattr(registry._stub, method), request)

        proxy.drop_next()
        model = await registry.upsert_registered_model(RegisteredModel(f"once-{unique}"))
        assert model.id is not None
        proxy.drop_next()
        first = await registry.upsert_model_version(ModelVersion("first"), model.id)
        assert first.id is not None and first.version is not None
        proxy.drop_next()
        named = await registry.upsert_model_version(ModelVersion("second"), model.id)
        version = int(first.version)
        for method, request in (
            (
                "SetRegisteredModelAlias",
                api.SetRegisteredModelAliasRequest(
                    registered_model_id=model.id, alias="champion", version=version
                ),
            ),
            (
                "SetRegisteredModelTag",
                api.SetRegisteredModelTagRequest(
                    registered_model_id=model.id, key="team", value="ml"
                ),
            ),
            (
                "DeleteRegisteredModelTag",
                api.DeleteRegisteredModelTagRequest(registered_model_id=model.id, key="team"),
            ),
            (
                "SetModelVersionTag",
                api.SetModelVersionTagRequest(model_version_id=first.id, key="ok", value="1"),
            ),
            (
                "DeleteModelVersionTag",
                api.DeleteModelVersionTagRequest(model_version_id=first.id, key="ok"),
            ),
            (
                "TransitionModelVersionStage",
                api.TransitionModelVersionStageRequest(id=first.id, stage="STAGE_STAGING"),
            ),
            ("DeleteModelVersion", api.DeleteModelVersionRequest(id=named.id)),
        ):
            await lost(method, request)
        assert [v.id for v in await registry.get_model_versions(model.id)] == [first.id]
        champion = await registry.get_model_version_by_alias(model.name, "champion")
        assert champion.id == first.id
        model.description = "churn"
        first.description = "the first"
        proxy.drop_next()
        await registry.upsert_registered_model(model)  # an update: it has an id
        proxy.drop_next()
        await registry.upsert_model_version(first, model.id)
        proxy.drop_next()
        artifact = await registry.upsert_model_artifact(
            ModelArtifact("weights", uri="s3://bucket/model/w.onnx"), first.id
        )
        artifact.description = "onnx"
        proxy.drop_next()
        await registry.upsert_model_artifact(artifact)
        assert [a.id for a in await registry.get_model_version_artifacts(first.id)] == [artifact.id]
        read = await registry.get_registered_model_by_id(model.id)
        assert read is not None and read.description == "churn"
        await lost(
            "DeleteRegisteredModelAlias",
            api.DeleteRegisteredModelAliasRequest(registered_model_id=model.id, alias="champion"),
        )
        await lost("DeleteArtifact", api.DeleteArtifactRequest(id=artifact.id))
        await lost(
            "RenameRegisteredModel",
            api.RenameRegisteredModelRequest(id=model.id, new_name=f"renamed-{unique}"),
        )
        await lost("DeleteRegisteredModel", api.DeleteRegisteredModelRequest(id=model.id))
        assert proxy.dropped == 18  # the 17 writes of the registry, one of them twice


async def test_auth_writes_apply_once_when_their_answers_are_lost(
    proxy: AnswerDroppingProxy, unique: str
) -> None:
    async with cairn.AuthClient.insecure_connection("127.0.0.1", proxy.port) as auth:
        proxy.drop_next()
        project = await auth.create_project(f"once-{unique}")  # not ALREADY_EXISTS
        assert project == f"once-{unique}"
        proxy.drop_next()
        key = await auth.create_user_api_key(
            f"user-{unique}", "k", cairn.types.ApiKeyExpirationTime.THIRTY_DAYS
        )
        # The key of the lost answer (its secret never seen) was revoked: one usable key.
        listed = await auth.get_user_api_keys(f"user-{unique}")
        assert sorted(k.revoke_time is None for k in listed) == [False, True]
        assert [k.prefix for k in listed if k.revoke_time is None] == [key.split("_")[1]]
        for write in (
            lambda: auth.add_user_project_role(f"user-{unique}", project, "VIEWER"),
            lambda: auth.delete_project_role(f"user-{unique}", project),
            lambda: auth.delete_api_key(key),
        ):
            proxy.drop_next()
            await write()
        assert proxy.dropped == 5
        assert await auth.get_project_members(project) == []


async def test_artifact_writes_apply_once_when_their_answers_are_lost(
    proxy: AnswerDroppingProxy, server_port: int, unique: str
) -> None:
    async with cairn.ArtifactClient.insecure_connection("127.0.0.1", proxy.port) as store:
        await store.upload(f"once-{unique}/a.bin", b"a")
        await store.upload(f"once-{unique}/b.bin", b"b")
        proxy.drop_next()
        assert await store.delete(f"once-{unique}/a.bin") == 1  # not NOT_FOUND
        proxy.drop_next()
        assert await store.delete(f"once-{unique}", recursive=True) == 1
        assert proxy.dropped == 2
        assert await store.list(f"once-{unique}/", recursive=True) == []


async def test_an_upload_whose_answer_is_lost_is_answered_with_what_it_stored(
    proxy: AnswerDroppingProxy, unique: str
) -> None:
    async with cairn.ArtifactClient.insecure_connection("127.0.0.1", proxy.port) as store:
        proxy.drop_next()
        info = await store.upload(f"once-{unique}/model.bin", b"weights")  # not ALREADY_EXISTS
        assert proxy.dropped == 1
        assert info.sha256 == (await store.stat(f"once-{unique}/model.bin")).sha256
        assert await store.read(f"once-{unique}/model.bin") == b"weights"


async def test_a_tree_whose_batch_answer_is_lost_is_stored_once(
    proxy: AnswerDroppingProxy, pool, unique: str, tmp_path: Path
) -> None:
    """The answer of the tree's one UploadFiles call is lost: the client sends the call
    again under its request id, which answers what the first stored (not ALREADY_EXISTS),
    and publishes nothing again."""
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(name.encode())
    async with cairn.ArtifactClient.insecure_connection("127.0.0.1", proxy.port) as store:
        proxy.drop_next()
        stored = await store.upload_tree(f"once-{unique}", tmp_path)
        assert proxy.dropped == 1
        assert [info.path for info in stored] == [f"once-{unique}/{n}" for n in "abc"]
        assert await store.read(f"once-{unique}/b") == b"b"
    published = await pool.fetchval(
        "SELECT count(*) FROM artifacts.objects WHERE path LIKE $1", f"once-{unique}/%"
    )
    assert published == 3
    left = "SELECT count(*) FROM artifacts.uploads WHERE path LIKE $1"
    assert await pool.fetchval(left, f"once-{unique}/%") == 0


async def test_a_request_id_reused_for_another_request_is_refused(
    server_port: int, unique: str
) -> None:
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        same_id = [(_headers.REQUEST_ID_HEADER, f"fixed-{unique}")]
        first = await tracking.create_experiment(f"a-{unique}", metadata=same_id)
        assert await tracking.create_experiment(f"a-{unique}", metadata=same_id) == first
        with pytest.raises(InvalidArgumentError) as raised:
            await tracking.create_experiment(f"b-{unique}", metadata=same_id)
        assert raised.value.reason == "REQUEST_ID_REUSED"


async def test_a_garbage_collection_retried_with_its_request_id_starts_once(
    proxy: AnswerDroppingProxy, server_port: int, pool, unique: str
) -> None:
    async with cairn.OperationsClient.insecure_connection("127.0.0.1", server_port) as ops:
        same_id = [(_headers.REQUEST_ID_HEADER, f"gc-{unique}")]
        first = await ops.start_garbage_collection(datetime.timedelta(days=1), metadata=same_id)
        again = await ops.start_garbage_collection(datetime.timedelta(days=1), metadata=same_id)
        assert again.name == first.name
        await ops.wait_operation(first.name, timeout=60)  # not left to another test
    # Counted from now: a collection prunes finished operations older than an hour.
    since = await pool.fetchval("SELECT clock_timestamp()")
    async with cairn.OperationsClient.insecure_connection("127.0.0.1", proxy.port) as ops:
        proxy.drop_next()
        started = await ops.start_garbage_collection(datetime.timedelta(days=1))
        assert proxy.dropped == 1
        done = await ops.wait_operation(started.name, timeout=60)
    assert done.state is OperationState.SUCCEEDED
    started_since = "SELECT count(*) FROM operations.operations WHERE create_time >= $1"
    assert await pool.fetchval(started_since, since) == 1


def test_every_write_of_the_recording_services_runs_once_per_request_id(pool) -> None:
    from cairn_server.common.idempotency import Idempotency

    specs = [spec for spec in catalog.select([]) if spec.records_requests]
    once = Idempotency(
        pool,
        {spec.full_name: spec.schema for spec in specs},
        exempt=set().union(*(spec.not_recorded for spec in specs)),
    )
    for spec in specs:
        for name in spec.roles:
            method = f"/{spec.full_name}/{name}"
            if name.startswith(READS):
                continue
            if name in spec.not_recorded:  # each deduplicates itself (docs/architecture.md)
                assert name in (
                    "LogBatch",
                    "LogMetric",
                    "CreateApiKey",
                    "ConfirmUpload",
                    "CreatePresignedUrl",
                    # An upload ticket carries the request id to the object its
                    # publication stores, which a repeat finds (as Upload does); on S3
                    # a repeat begins another upload, which the janitor discards unused.
                    # A download ticket reads, and a repeat signs another.
                    "CreateUploadTicket",
                    "CreateDownloadTicket",
                    # Finds the object its request id published, as ConfirmUpload does.
                    "CompleteUploadTicket",
                    # A repeat finds no upload left to give up, and answers OK.
                    "AbortUploadTicket",
                    # Claims its id, and keeps its answer, in the transaction that
                    # publishes its files (the interceptor's would hold a connection
                    # while their bytes are written).
                    "UploadFiles",
                )
                continue
            if name == "Upload":
                continue  # a client stream: not recorded, not retried (docs/artifacts.md)
            assert once.schema_of(method) == spec.schema, method
            # So the client sends it again: Transport does every call but a client stream.
            descriptor = descriptor_pool.Default().FindServiceByName(spec.full_name)
            assert not descriptor.FindMethodByName(name).client_streaming, method


async def test_request_ids_are_forgotten_after_their_retention(
    server_port: int, pool, unique: str
) -> None:
    from cairn_server.common.idempotency import Idempotency

    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        same_id = [(_headers.REQUEST_ID_HEADER, f"kept-{unique}")]
        await tracking.create_experiment(f"kept-{unique}", metadata=same_id)
    once = Idempotency(pool, {"cairn.tracking.v1.TrackingService": "tracking"}, exempt=set())
    count = "SELECT count(*) FROM tracking.requests WHERE request_id = $1"
    async with pool.acquire() as conn:
        assert await conn.fetchval(count, f"kept-{unique}") == 1
        await once.prune(retention_seconds=3600)  # younger than that: kept
        assert await conn.fetchval(count, f"kept-{unique}") == 1
        assert await once.prune(retention_seconds=0) >= 1
        assert await conn.fetchval(count, f"kept-{unique}") == 0


async def test_log_batch_ids_are_forgotten_after_their_own_retention(
    server_port: int, pool, unique: str
) -> None:
    from cairn.types import Metric
    from cairn_server.tracking import retention

    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        run_id = (
            await tracking.create_run(await tracking.create_experiment(f"b-{unique}"))
        ).info.run_id
        point = [Metric("loss", 1.0, 1000, 1)]
        await tracking.log_batch(run_id, point, request_id=f"batch-{unique}")
        await retention.prune(pool, retention_seconds=3600)  # younger: remembered
        await tracking.log_batch(run_id, point, request_id=f"batch-{unique}")
        assert len(await tracking.get_metric_history(run_id, "loss")) == 1
        assert await retention.prune(pool, retention_seconds=0) >= 1
        async with pool.acquire() as conn:
            left = await conn.fetchval(
                "SELECT count(*) FROM tracking.applied_batches WHERE request_id = $1",
                f"batch-{unique}",
            )
        assert left == 0


async def test_log_metric_ids_are_kept_for_their_retention_when_batch_ids_go_sooner(
    server_port: int, pool, unique: str
) -> None:
    """Both retentions are settings of their own: with LogBatch's the shorter, the prune
    of the oldest ids took LogMetric's with them, before their own retention, and a
    retry of a LogMetric then stored its point twice."""
    from cairn_server.tracking import retention

    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        run_id = (
            await tracking.create_run(await tracking.create_experiment(f"m-{unique}"))
        ).info.run_id
        same_id = [(_headers.REQUEST_ID_HEADER, f"metric-{unique}")]
        await tracking.log_metric(run_id, "loss", 1.0, step=1, timestamp=1000, metadata=same_id)
        await pool.execute(
            """UPDATE tracking.applied_batches SET applied_at = applied_at - interval '120 s'
               WHERE run_id = $1""",
            uuid.UUID(run_id),
        )
        await retention.prune(pool, retention_seconds=60, metric_retention_seconds=3600)
        await tracking.log_metric(run_id, "loss", 1.0, step=1, timestamp=1000, metadata=same_id)
        assert len(await tracking.get_metric_history(run_id, "loss")) == 1


async def test_the_prune_of_log_batch_ids_reads_no_log_metric_id(pool) -> None:
    """With LogBatch's retention the shorter, its prune walked the index of every id by
    age and passed over each LogMetric id between the two cutoffs, row by row, at every
    slice: millions at thousands of log_metric calls a second."""
    from cairn_server.tracking import retention

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")  # as on a large table
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + retention._PRUNE_BATCH, 60.0, retention.SLICE_ROWS
        )
    scans = [node for node in _plan_nodes(json.loads(plan)[0]["Plan"]) if "Index Name" in node]
    # The index of LogBatch's rows alone: none is read only to be passed over.
    assert [node["Index Name"] for node in scans] == ["applied_batches_batch_applied_at"]


def _plan_nodes(node: dict) -> list[dict]:
    return [node] + [n for child in node.get("Plans", []) for n in _plan_nodes(child)]


async def test_a_prune_passes_over_the_request_ids_a_call_holds(
    server_port: int, pool, unique: str
) -> None:
    """A call reading a claim holds it (FOR KEY SHARE) until it commits; the prune,
    one transaction over every schema, waited out that call's whole handler, and could
    deadlock with it. The held id is left for the next prune."""
    from cairn_server.common.idempotency import Idempotency

    async with cairn.TrackingClient.insecure_connection("127.0.0.1", server_port) as tracking:
        for name in ("held", "free"):
            same_id = [(_headers.REQUEST_ID_HEADER, f"{name}-{unique}")]
            await tracking.create_experiment(f"{name}-{unique}", metadata=same_id)
    once = Idempotency(pool, {"cairn.tracking.v1.TrackingService": "tracking"}, exempt=set())
    kept = "SELECT request_id FROM tracking.requests WHERE request_id = ANY($1::text[])"
    async with another_transaction(pool) as call:
        await call.execute(
            "SELECT 1 FROM tracking.requests WHERE request_id = $1 FOR KEY SHARE",
            f"held-{unique}",
        )
        await asyncio.wait_for(once.prune(retention_seconds=0), 10)
        left = await pool.fetch(kept, [f"held-{unique}", f"free-{unique}"])
    assert [row["request_id"] for row in left] == [f"held-{unique}"]
