"""What the tracking client makes of the values and options a caller passes: each as
MLflow's client takes it, or an InvalidArgumentError naming the argument before any
call (never protobuf's bare TypeError or ValueError)."""

import asyncio
import time
from typing import Any

import numpy as np
import pytest

import cairn
from cairn import sync
from cairn.exceptions import InvalidArgumentError
from cairn.types import ListOptions, Metric, Pager, Param, RegisteredModel, RunTag


async def test_a_timestamp_of_0_is_kept_as_log_batch_keeps_it(tracking, run_id) -> None:
    await tracking.log_metric(run_id, "by-call", 1.0, timestamp=0)
    await tracking.log_batch(run_id, metrics=[Metric("by-batch", 1.0, 0, 0)])
    async with tracking.start_run((await tracking.get_run(run_id)).info.experiment_id) as run:
        await run.log_metric("buffered", 1.0, timestamp=0)
    buffered = await tracking.get_metric_history(run.run_id, "buffered")
    for key in ("by-call", "by-batch"):
        assert [p.timestamp for p in await tracking.get_metric_history(run_id, key)] == [0]
    assert [p.timestamp for p in buffered] == [0]


async def test_a_batch_point_made_without_a_timestamp_is_stamped_as_it_is_made(
    tracking, run_id
) -> None:
    """Metric(key, value) was at timestamp 0, 1970 in any chart, where log_metric
    without a timestamp is stamped now."""
    before = time.time_ns() // 1_000_000
    point = Metric("made", 1.0)
    after = time.time_ns() // 1_000_000
    await tracking.log_batch(run_id, metrics=[point])
    [logged] = await tracking.get_metric_history(run_id, "made")
    assert before <= logged.timestamp <= after


@pytest.mark.parametrize("value", ["1.5", b"1", "abc", None, 1j, 10**400])
async def test_a_metric_value_must_be_a_number(tracking, run_id, value) -> None:
    with pytest.raises(InvalidArgumentError, match="value"):
        await tracking.log_metric(run_id, "k", value)
    async with tracking.start_run((await tracking.get_run(run_id)).info.experiment_id) as run:
        with pytest.raises(InvalidArgumentError, match="value"):
            await run.log_metric("k", value)
    with pytest.raises(InvalidArgumentError, match="metrics"):  # 10**400 was OverflowError
        await tracking.log_batch(run_id, metrics=[Metric("k", value, 0, 0)])
    assert await tracking.get_metric_history(run_id, "k") == []


async def test_numbers_of_numpy_and_booleans_as_metric_values(tracking, run_id) -> None:
    for step, value in enumerate([np.float32(0.5), np.int64(2), True]):
        await tracking.log_metric(run_id, "k", value, step=step)
    assert [p.value for p in await tracking.get_metric_history(run_id, "k")] == [0.5, 2.0, 1.0]


async def test_a_boolean_step_is_refused_on_both_paths(tracking, run_id) -> None:
    with pytest.raises(InvalidArgumentError, match="step"):
        await tracking.log_metric(run_id, "k", 1.0, step=True)
    with pytest.raises(InvalidArgumentError):
        await tracking.log_batch(run_id, metrics=[Metric("k", 1.0, 1, True)])


@pytest.mark.parametrize("value", [2**70, 1.7e12, "1700000000000"])
async def test_times_that_are_no_64_bit_integers_are_named(
    tracking, experiment_id, run_id, value
) -> None:
    with pytest.raises(InvalidArgumentError, match="start_time"):
        await tracking.create_run(experiment_id, start_time=value)
    with pytest.raises(InvalidArgumentError, match="end_time"):
        await tracking.set_terminated(run_id, end_time=value)


@pytest.mark.parametrize("value", [2**31, 5.0])
async def test_page_sizes_that_are_no_32_bit_integers_are_named(
    tracking, experiment_id, value
) -> None:
    with pytest.raises(InvalidArgumentError, match="max_results"):
        await tracking.search_experiments(max_results=value)
    with pytest.raises(InvalidArgumentError, match="max_results"):
        await tracking.search_runs([experiment_id], max_results=value)


async def test_search_runs_takes_one_id_alone_as_a_number(tracking, experiment_id) -> None:
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    for alone in (experiment_id, int(experiment_id), np.int64(experiment_id)):
        assert [r.info.run_id for r in await tracking.search_runs(alone)] == [run_id]


async def test_a_pagers_direction_orders_the_field_it_orders_by(
    tracking, experiment_id, unique
) -> None:
    """A direction goes with a field (Kubeflow's `order_by_creation_time().descending()`);
    without one the search keeps MLflow's default, newest first (docs/tracking.md)."""
    made = [
        (await tracking.create_run(experiment_id, run_name=f"r{n}", start_time=1000 + n)).info
        for n in range(3)
    ]
    names = [r.run_name for r in made]

    async def runs(pager: Pager) -> list[str]:
        return [r.info.run_name async for r in pager.limit(2)]

    def pager() -> Pager:
        return Pager(lambda options: tracking.search_runs([experiment_id], options=options))

    assert await runs(pager().order_by_creation_time().ascending()) == names
    assert await runs(pager().order_by_creation_time().descending()) == names[::-1]
    for alone in (pager(), pager().ascending(), pager().descending()):
        assert await runs(alone) == names[::-1]
    # An order_by of the call's own still rules, with the pager's pages.
    ordered = Pager(
        lambda options: tracking.search_runs(
            [experiment_id], order_by=["attributes.run_name DESC"], options=options
        )
    ).ascending()
    assert await runs(ordered) == names[::-1]

    for name in ("e0", "e1", "e2"):
        await tracking.create_experiment(f"{unique}-{name}")

    async def experiments(pager: Pager) -> list[str]:
        return [e.name.removeprefix(f"{unique}-") async for e in pager.limit(2)]

    def experiment_pager() -> Pager:
        return Pager(
            lambda options: tracking.search_experiments(
                filter_string=f"name LIKE '{unique}-%'", options=options
            )
        )

    assert await experiments(experiment_pager().order_by_creation_time().ascending()) == [
        "e0",
        "e1",
        "e2",
    ]
    assert await experiments(experiment_pager().ascending()) == ["e2", "e1", "e0"]


@pytest.mark.parametrize(
    "value, kind", [(np.int64(3), int), (np.float32(0.5), float), (np.bool_(True), bool)]
)
async def test_numpy_custom_properties_are_the_numbers_they_stand_for(
    server_port, unique, value, kind
) -> None:
    async with cairn.ModelRegistryAPIClient.insecure_connection(
        "127.0.0.1", server_port
    ) as registry:
        model = await registry.upsert_registered_model(
            RegisteredModel(f"props-{unique}", custom_properties={"p": value})
        )
        assert model.id is not None
        read = await registry.get_registered_model_by_id(model.id)
        assert read is not None and read.custom_properties is not None
        stored = read.custom_properties["p"]
    assert type(stored) is kind and stored == value


@pytest.mark.parametrize("value", [2**63, [1], None])
async def test_a_custom_property_the_registry_cannot_hold_is_named(
    server_port, unique, value
) -> None:
    async with cairn.ModelRegistryAPIClient.insecure_connection(
        "127.0.0.1", server_port
    ) as registry:
        with pytest.raises(InvalidArgumentError, match=r"custom_properties\['p'\]"):
            await registry.upsert_registered_model(
                RegisteredModel(f"bad-{unique}", custom_properties={"p": value})
            )


@pytest.mark.parametrize(
    "listing",
    [
        lambda c, options: c.registry.get_registered_models(options),
        lambda c, options: c.artifacts.list(options=options),
        lambda c, options: c.operations.get_operations(options),
    ],
    ids=["registry", "artifacts", "operations"],
)
@pytest.mark.parametrize("limit", [2**31, -(2**31) - 1, False, "10"])
async def test_a_page_size_that_is_no_32_bit_integer_is_named(server_port, listing, limit) -> None:
    """The artifacts' and operations' listings put the limit in the request as it came:
    protobuf's bare ValueError for 2**31, and False or "" was a page of the default."""
    async with cairn.Client(f"http://127.0.0.1:{server_port}") as client:
        with pytest.raises(InvalidArgumentError, match="limit"):
            await listing(client, ListOptions(limit=limit))


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("batch_size", 2.5),
        ("batch_size", float("nan")),
        ("batch_size", "5"),
        ("batch_size", True),
        ("max_buffered", float("nan")),
        ("flush_timeout", "5"),
        ("flush_timeout", float("nan")),
        ("flush_timeout", -1),
        ("send_interval", "5"),
        ("send_interval", float("nan")),
    ],
)
async def test_a_run_setting_of_the_wrong_kind_is_named_at_start_run(
    tracking, experiment_id, setting, value
) -> None:
    """A batch_size of 2.5 or NaN passed `< 1`, and the sender died at its first batch:
    every point lost, no journal, flush() hanging; a flush_timeout of "5" raised a bare
    TypeError as the block ended, of NaN journaled all it had sent."""
    with pytest.raises(InvalidArgumentError, match=setting):
        tracking.start_run(experiment_id, **{setting: value})


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -1, 0, 2**70, "5", True])
async def test_a_calls_own_timeout_is_checked_as_the_clients_is(tracking, run_id, timeout) -> None:
    """A call's own timeout went to grpc as it came: each of these failed the call at
    once DEADLINE_EXCEEDED ("5" a bare TypeError), and, with synchronous=False, every
    write queued behind it as well, as after a server that does not answer."""
    with pytest.raises(InvalidArgumentError, match="timeout"):
        await tracking.log_metric(run_id, "k", 1.0, timeout=timeout)
    bad = await tracking.log_metric(run_id, "k", 1.0, synchronous=False, timeout=timeout)
    behind = [await tracking.log_metric(run_id, "k", 2.0, synchronous=False) for _ in range(3)]
    with pytest.raises(InvalidArgumentError, match="timeout"):
        await bad.wait()
    for write in behind:
        await write.wait()
    assert [p.value for p in await tracking.get_metric_history(run_id, "k")] == [2.0] * 3


def _set(target: object, name: str, value: object) -> None:
    setattr(target, name, value)


async def _managed(client: cairn.Client, page_size: object) -> None:
    client.models.page_size = page_size  # type: ignore[assignment]
    await client.models.get_models()


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("call", "named"),
    [
        *(
            (lambda c, e, v=v: c.artifacts.presigned_url("x", expires_in=v), "expires_in")
            for v in (NAN, INF, -INF, 1e15, "5", True)
        ),
        *((lambda c, e, v=v: _managed(c, v), "page_size") for v in (2**31, NAN, "5")),
        *(
            (lambda c, e, v=v: c.registry.get_artifact("a", version=v), "version")
            for v in (2**63, 1.5, "2", True)
        ),
        *(
            (lambda c, e, v=v: c.tracking.search_runs_table(e, max_results=v), "max_results")
            for v in (NAN, INF, 2.5, "5", True)
        ),
        *(
            (lambda c, e, v=v: _set(c.artifacts, "direct_threshold", v), "direct_threshold")
            for v in ("1", NAN, -1, True)
        ),
        *(
            (lambda c, e, v=v: _set(c.artifacts, "direct_connections", v), "direct_connections")
            for v in (2.5, INF, 0, "4")
        ),
        (lambda c, e: c.operations.wait_operation("operations/x", timeout="5"), "timeout"),
        (
            lambda c, e: c.operations.wait_operation("operations/x", report_every="5"),
            "report_every",
        ),
        (lambda c, e: c.operations.start_garbage_collection(5), "older_than"),
    ],
)
async def test_a_number_of_the_wrong_kind_is_named_before_any_call(
    server_port, experiment_id, call, named
) -> None:
    """Each was a bare ValueError, OverflowError or TypeError naming nothing (an
    expires_in of NaN or inf, a page_size or version past its bits, a string where a
    number goes), a setting that failed only at the next upload ("1" as a threshold),
    or silently another (a search_runs_table of NaN results read 1,000 runs; a
    threshold of NaN turned direct transfer off; True was 1)."""
    async with cairn.Client(f"http://127.0.0.1:{server_port}") as client:
        with pytest.raises(InvalidArgumentError, match=named):
            result = call(client, experiment_id)
            if asyncio.iscoroutine(result):
                await result


@pytest.mark.parametrize("step", [False, "", "0"])
async def test_a_step_that_is_no_number_is_refused_not_read_as_0(tracking, run_id, step) -> None:
    """`step or 0` read False and "" as step 0 (None is step 0, as in MLflow)."""
    with pytest.raises(InvalidArgumentError, match="step"):
        await tracking.log_metric(run_id, "k", 1.0, step=step)
    async with tracking.start_run((await tracking.get_run(run_id)).info.experiment_id) as run:
        with pytest.raises(InvalidArgumentError, match="step"):
            await run.log_metric("k", 1.0, step=step)
        await run.log_metric("k", 1.0, step=None)
    assert [p.step for p in await tracking.get_metric_history(run.run_id, "k")] == [0]
    assert await tracking.get_metric_history(run_id, "k") == []


@pytest.mark.parametrize("form", ["generator", "dict values", "set"])
async def test_the_sync_facade_takes_its_artifacts_in_any_iterable(
    server_port, experiment_id, unique, form
) -> None:
    def scenario() -> None:
        with sync.Client("127.0.0.1", server_port, is_secure=False) as client:
            artifact = client.registry.create_artifact(f"ds-{unique}", "dataset", {}, files=b"x")
            used = {
                "generator": (a for a in [artifact]),
                "dict values": {"a": artifact}.values(),
                "set": {artifact},
            }[form]
            with client.tracking.start_run(experiment_id, used_artifacts=used) as run:
                pass
            inputs = client.tracking.get_run(run.run_id).inputs
            assert [i.uri for i in inputs] == [artifact.uri]

    await asyncio.to_thread(scenario)


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda t, r, m: t.create_experiment(5), "name: 5 is no string"),
        (lambda t, r, m: t.get_run(5), "run_id: 5 is no string"),
        (lambda t, r, m: t.search_runs(["1"], filter_string=5), "filter: 5 is no string"),
        (lambda t, r, m: t.create_run("1", tags={1: 2}), "key: 1 is no string"),
        (lambda t, r, m: m.get_registered_model(5), "name: 5 is no string"),
        (lambda t, r, m: t.log_batch(r, params={"a": "b"}), "params: {'a': 'b'} is no list"),
        (lambda t, r, m: t.log_batch(r, tags=["a"]), "tags: 'a' is no Tag"),
        (lambda t, r, m: t.log_batch(r, metrics=[1, 2]), "metrics: 'int' object has no"),
    ],
    ids=["experiment", "run", "filter", "tag-key", "model", "params-dict", "tag", "metrics"],
)
async def test_an_argument_of_the_wrong_type_is_named(
    tracking, run_id, server_port, call, named
) -> None:
    """protobuf's TypeError ("bad argument type for built-in operation") named no
    argument, and log_batch given a dict of params an AttributeError of a str."""
    async with cairn.ModelRegistryAPIClient.insecure_connection(
        "127.0.0.1", server_port
    ) as registry:
        with pytest.raises(InvalidArgumentError) as refused:
            await call(tracking, run_id, registry)
    assert named in str(refused.value)


async def _buffered(client: cairn.Client, experiment_id: str, key: Any) -> None:
    async with client.tracking.start_run(experiment_id) as run:
        await run.log_metric(key, 1.0)


async def _aliased(client: cairn.Client, name: str, version: Any) -> None:
    await client.registry.create_registered_model(name)
    await client.registry.set_registered_model_alias(name, "champion", version)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c, e, r, u: c.tracking.log_metric(r, "k", 1.0, step=1.5), "step"),
        (lambda c, e, r, u: c.tracking.log_metric(r, "k", 1.0, step=True), "step"),
        (lambda c, e, r, u: c.tracking.log_metric(r, "k", "abc"), "value"),
        (lambda c, e, r, u: c.tracking.log_metric(r, "k", 1.0, timestamp=2**70), "timestamp"),
        (lambda c, e, r, u: c.tracking.create_run(e, start_time=1.7e12), "start_time"),
        (lambda c, e, r, u: c.tracking.log_batch(r, metrics=[1]), "metrics"),
        (lambda c, e, r, u: _buffered(c, e, 5), "key"),
        (lambda c, e, r, u: _buffered(c, e, " k"), "key"),
        (
            lambda c, e, r, u: c.registry.upsert_registered_model(
                RegisteredModel(f"m-{u}", custom_properties={"p": [1]})  # type: ignore[dict-item]
            ),
            "custom_properties['p']",
        ),
        (
            lambda c, e, r, u: c.registry.upsert_registered_model(
                RegisteredModel(f"m-{u}", custom_properties={"p": 2**63})
            ),
            "custom_properties['p']",
        ),
        (lambda c, e, r, u: _aliased(c, f"m-{u}", "v1"), "version"),
        (lambda c, e, r, u: c.registry.copy_model_version("churn/1", "copy"), "src_model_uri"),
        (lambda c, e, r, u: c.tracking.load_model("models:/churn"), "model_uri"),
        (lambda c, e, r, u: c.tracking.log_model(r, object(), "m"), "model"),
        (lambda c, e, r, u: c.tracking.log_model(r, b"x", "m", flavor="onnx"), "flavor"),
        (
            lambda c, e, r, u: c.tracking.log_model(
                r, b"x", "m", flavor="pickle", registered_model_name=""
            ),
            "registered_model_name",
        ),
        (lambda c, e, r, u: c.models.add_model("", "ONNX", __file__), "name"),
        (
            lambda c, e, r, u: c.registry.create_artifact(f"a-{u}", "data", {"n": {"a": 1}}),
            "metadata['n']",
        ),
        (
            lambda c, e, r, u: c.registry.create_artifact(
                f"a-{u}", "data", files=["a/data.csv", "b/data.csv"]
            ),
            "files",
        ),
    ],
    ids=lambda case: case if isinstance(case, str) else None,
)
async def test_a_bad_argument_the_client_checks_names_it_in_field_violations(
    server_port, experiment_id, run_id, unique, call, field: str
) -> None:
    """docs/client.md, Errors: a bad argument the client sees itself carries the
    argument in field_violations, as the server's refusal of a field does. These came
    with none: field_violations was [] for a step of 1.5, a value of 'abc', a timestamp
    past 64 bits, a custom property of a list and every other check in _numbers.py,
    _names.py, the URIs, the flavors and the artifacts' metadata and files."""
    async with cairn.Client(f"http://127.0.0.1:{server_port}") as client:
        with pytest.raises(InvalidArgumentError) as refused:
            await call(client, experiment_id, run_id, unique)
    assert refused.value.reason == "INVALID_ARGUMENT"
    assert [named for named, _ in refused.value.field_violations] == [field]
    assert refused.value.message.startswith(f"{field}: ")


def test_an_address_that_is_no_text_is_named() -> None:
    """sync.Client(None) raised AttributeError: 'NoneType' object has no attribute 'lower'."""
    with pytest.raises(TypeError, match=r"an address is text \(str\), not NoneType"):
        sync.Client(None)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda t, r: t.log_param(r, "p", "x" * 6001), "param.value"),
        (lambda t, r: t.log_param(r, "", 1), "param.key"),
        (lambda t, r: t.set_tag(r, "t", "x" * 8001), "tag.value"),
        (lambda t, r: t.log_batch(r, params=[Param("p", "x" * 6001)]), "params[0].value"),
        (lambda t, r: t.set_tag(r, "mlflow.runName", "x" * 501), "tag.value"),
        (
            lambda t, r: t.log_batch(
                r, tags=[RunTag("mlflow.runName", "ok"), RunTag("mlflow.runName", "x" * 501)]
            ),
            "tags[1].value",
        ),
    ],
    ids=[
        "log_param-value",
        "log_param-key",
        "set_tag-value",
        "log_batch-params",
        "set_tag-run-name",
        "log_batch-run-name",
    ],
)
async def test_the_server_names_a_refused_field_as_its_request_holds_it(
    tracking, run_id, call, field: str
) -> None:
    """LogParam and SetTag named their one param or tag `param[0]` and `tag[0]`, and a
    run name too long in a tag `tag[mlflow.runName]`: fields their requests do not have,
    which no client can map back to what it sent."""
    with pytest.raises(InvalidArgumentError) as refused:
        await call(tracking, run_id)
    assert [named for named, _ in refused.value.field_violations] == [field]
    assert refused.value.message.startswith(f"{field}: ")
