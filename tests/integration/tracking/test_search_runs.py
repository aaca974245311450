"""search_runs: the filter language, ordering with NaN and missing last, keyset paging."""

import asyncio
import base64
import hashlib
import json
import math
from typing import Any

import asyncpg
import pytest

import cairn
from cairn.exceptions import InvalidArgumentError
from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn.types import ListOptions, Metric, Pager, Param, RunInput, RunTag, ViewType
from cairn.types._tracking import run_from_proto, runs_from_search
from cairn_server.common import paging
from cairn_server.tracking.model import Batch
from cairn_server.tracking.store import search
from tests.conftest import sealed_by, unsealed


async def _run(tracking, experiment_id, name, metrics=None, params=None, tags=None, status=None):
    run = (await tracking.create_run(experiment_id, run_name=name)).info.run_id
    await tracking.log_batch(
        run,
        metrics=[Metric(k, v, 1, 0) for k, v in (metrics or {}).items()],
        params=[Param(k, v) for k, v in (params or {}).items()],
        tags=[RunTag(k, v) for k, v in (tags or {}).items()],
    )
    if status:
        await tracking.set_terminated(run, status)
    return run


@pytest.fixture
async def zoo(tracking: cairn.TrackingClient, experiment_id: str) -> dict[str, str]:
    """Five runs with overlapping metrics, params, tags and statuses."""
    return {
        "a": await _run(
            tracking,
            experiment_id,
            "a",
            {"acc": 0.95, "loss": 0.1},
            {"model": "cnn"},
            {"team": "x"},
            "FINISHED",
        ),
        "b": await _run(
            tracking, experiment_id, "b", {"acc": 0.80}, {"model": "cnn"}, {"team": "y"}, "FAILED"
        ),
        "c": await _run(
            tracking, experiment_id, "c", {"acc": math.nan}, {"model": "rnn"}, {}, "FINISHED"
        ),
        "d": await _run(
            tracking,
            experiment_id,
            "d",
            {"acc": 0.91, "loss": math.inf},
            {"model": "CNN-big"},
            {"team": "x"},
        ),
        "e": await _run(tracking, experiment_id, "e", {}, {}, {}),
    }


async def _names(tracking, experiment_id, filter_string="", order_by=None, **kwargs) -> list[str]:
    runs = await tracking.search_runs([experiment_id], filter_string, order_by=order_by, **kwargs)
    return [r.info.run_name for r in runs]


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        (
            "metrics.acc > 0.9 and params.model = 'cnn' and tags.team = 'x' "
            "and attributes.status = 'FINISHED'",
            {"a"},
        ),
        ("metrics.acc > 0.9", {"a", "d"}),  # NaN matches no comparison
        ("metrics.'acc' > 0.9 AND params.\"model\" = 'cnn'", {"a"}),  # MLflow's quoted keys
        ("metrics.acc != 0.8", {"a", "c", "d"}),
        ("metrics.loss >= 1e308", {"d"}),
        ("params.model LIKE 'cnn%'", {"a", "b"}),
        ("params.model ILIKE 'cnn%'", {"a", "b", "d"}),
        ("params.model NOT LIKE 'cnn%'", {"c", "d"}),
        ("params.model IN ('rnn', 'CNN-big')", {"c", "d"}),
        ("params.model NOT IN ('cnn')", {"c", "d"}),
        ("tags.team IS NULL", {"c", "e"}),
        ("tags.team IS NOT NULL AND metrics.loss IS NULL", {"b"}),
        ("tags.team = 'y' OR (params.model = 'rnn' AND metrics.acc IS NOT NULL)", {"b", "c"}),
        ("attributes.status IN ('FAILED', 'RUNNING')", {"b", "d", "e"}),
        ("status != 'FINISHED'", {"b", "d", "e"}),
        # As MLflow, which stores the names: LIKE is case-sensitive, ILIKE is not.
        ("attributes.status LIKE 'F%'", {"a", "b", "c"}),
        ("attributes.status LIKE 'f%'", set()),
        ("status ILIKE 'fin%'", {"a", "c"}),
        ("status NOT ILIKE '%_ed'", {"d", "e"}),
        ("status LIKE 'R_NNING' OR status = 'FAILED'", {"b", "d", "e"}),
        ("status LIKE 'RUN\\%'", set()),  # an escaped % is itself
        ("run_name = 'e'", {"e"}),
        ("attributes.end_time IS NULL", {"d", "e"}),
    ],
)
async def test_filters(
    tracking, experiment_id, zoo, filter_string: str, expected: set[str]
) -> None:
    assert set(await _names(tracking, experiment_id, filter_string)) == expected


@pytest.mark.parametrize(
    ("direction", "present"), [("DESC", ["a", "d", "b"]), ("ASC", ["b", "d", "a"])]
)
async def test_nan_and_missing_sort_last_in_both_directions(
    tracking, experiment_id, zoo, direction: str, present: list[str]
) -> None:
    """The valued runs, then the one whose value is NaN (c), then the one without the
    metric (e), as MLflow orders them. Before, c and e went by their run ids."""
    await _run(tracking, experiment_id, "c2", {"acc": math.nan})
    await _run(tracking, experiment_id, "e2", {"loss": 0.5})
    names = await _names(tracking, experiment_id, order_by=[f"metrics.acc {direction}"])
    assert names[:3] == present
    assert set(names[3:5]) == {"c", "c2"} and set(names[5:]) == {"e", "e2"}
    several = ["metrics.acc " + direction, "run_name DESC"]
    expected = [*present, "c2", "c", "e2", "e"]
    assert await _names(tracking, experiment_id, order_by=several) == expected


async def test_order_by_several_terms(tracking, experiment_id, zoo) -> None:
    names = await _names(tracking, experiment_id, order_by=["tags.team ASC", "run_name DESC"])
    assert names == ["d", "a", "b", "e", "c"]  # team x (d, a), then y, then the ones without


async def _runs_started_in_turn(tracking, experiment_id, models: list[str]) -> None:
    """A run per model named, named after it and its place, each started after the last."""
    for i, model in enumerate(models):
        run = await tracking.create_run(experiment_id, start_time=1000 + i, run_name=f"{model}{i}")
        await tracking.log_batch(
            run.info.run_id, params=[Param("model", model)], tags=[RunTag("team", "x")]
        )


@pytest.mark.parametrize(
    "order",
    [["params.model"], ["params.model ASC", "tags.team DESC"], ["tags.team", "params.model"]],
)
async def test_ties_go_newest_first_then_by_run_id_as_in_mlflow(
    tracking, experiment_id, order: list[str]
) -> None:
    """MLflow breaks an order's ties by start time, newest first, unless the order names
    it. Before, Cairn broke them by run id: the six runs of each model came in the order
    of their random ids. Pages of two cross the ties."""
    await _runs_started_in_turn(tracking, experiment_id, ["cnn"] * 6 + ["rnn"] * 6)
    newest_first = [f"cnn{i}" for i in range(5, -1, -1)] + [f"rnn{i}" for i in range(11, 5, -1)]
    names, token = [], None
    while True:
        page = await tracking.search_runs(
            [experiment_id], order_by=order, max_results=2, page_token=token
        )
        names += [r.info.run_name for r in page]
        if not (token := page.token):
            break
    assert names == newest_first


async def test_an_order_naming_the_start_time_keeps_it_and_one_metric_ties_by_run_id(
    tracking, experiment_id
) -> None:
    """Named, the start time is the order the caller chose (oldest first here). One
    metric's order breaks ties by run id alone, along its index (docs/filters.md)."""
    await _runs_started_in_turn(tracking, experiment_id, ["cnn"] * 4)
    oldest_first = ["params.model", "attributes.start_time ASC"]
    names = await _names(tracking, experiment_id, order_by=oldest_first)
    assert names == ["cnn0", "cnn1", "cnn2", "cnn3"]
    runs = await tracking.search_runs([experiment_id])
    for run in runs:
        await tracking.log_metric(run.info.run_id, "acc", 0.5)
    by_metric = await tracking.search_runs([experiment_id], order_by=["metrics.acc DESC"])
    ids = [r.info.run_id for r in by_metric]
    assert ids == sorted(ids, reverse=True)


async def test_pages_stay_correct_while_runs_are_inserted(tracking, experiment_id) -> None:
    for n in range(10):
        await _run(tracking, experiment_id, f"r{n}", {"score": float(n)})
    seen: list[str] = []
    page = await tracking.search_runs(
        [experiment_id], order_by=["metrics.score DESC"], max_results=3
    )
    while True:
        seen += [r.info.run_name for r in page]
        # Runs that sort before, after and at the cursor appear between pages.
        await _run(tracking, experiment_id, f"new{len(seen)}", {"score": 100.0 + len(seen)})
        if not page.token:
            break
        page = await tracking.search_runs(
            [experiment_id], order_by=["metrics.score DESC"], max_results=3, page_token=page.token
        )
    assert seen == [f"r{n}" for n in reversed(range(10))]


async def test_search_runs_with_the_pager(tracking, experiment_id) -> None:
    for n in range(5):
        await _run(tracking, experiment_id, f"p{n}")
    calls = []

    async def page(options: ListOptions):
        calls.append(options.next_page_token)
        return await tracking.search_runs([experiment_id], options=options)

    names = [r.info.run_name async for r in Pager(page).order_by_creation_time().limit(2)]
    assert names == [f"p{n}" for n in range(5)]
    assert len(calls) == 3


async def test_deleted_runs_by_view_type(tracking, experiment_id, zoo) -> None:
    await tracking.delete_run(zoo["e"])
    assert "e" not in await _names(tracking, experiment_id)
    assert await _names(tracking, experiment_id, run_view_type=ViewType.DELETED_ONLY) == ["e"]
    assert len(await _names(tracking, experiment_id, run_view_type=ViewType.ALL)) == 5


@pytest.mark.parametrize(
    ("filter_string", "position"),
    [
        ("metrics.acc >", 13),
        ("metrics.acc > 'high'", 0),
        ("params.model > 3", 0),
        ("metrics.acc LIKE 'x'", 0),
        ("attributes.colour = 'red'", 0),
        ("status = 'DONE'", 0),
        ("status > 'FINISHED'", 0),
        ("start_time > 1.5", 0),
        ("datasets.x = 'y'", 0),
        ("metrics.acc > 0.5 and or", 22),
        # Another script's digits, and fullwidth ones, are no number, as in MLflow.
        ("start_time = \u0661\u0660\u0660\u0660", 13),
        ("metrics.acc = \uff11", 14),
    ],
)
async def test_bad_filters_name_the_position(
    tracking, experiment_id, filter_string: str, position: int
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await tracking.search_runs([experiment_id], filter_string)
    assert raised.value.reason == "INVALID_FILTER"
    assert raised.value.metadata["position"] == str(position)


async def test_a_page_token_of_another_query_is_refused(tracking, experiment_id, zoo) -> None:
    page = await tracking.search_runs([experiment_id], "metrics.acc > 0", max_results=1)
    assert page.token
    with pytest.raises(InvalidArgumentError) as raised:
        await tracking.search_runs(
            [experiment_id], "metrics.acc > 0.5", max_results=1, page_token=page.token
        )
    assert raised.value.reason == "INVALID_PAGE_TOKEN"


async def test_filter_values_never_become_sql(tracking, experiment_id, zoo) -> None:
    hostile = "params.model = 'x'' OR 1=1; DROP TABLE tracking.runs; --'"
    assert await _names(tracking, experiment_id, hostile) == []
    assert len(await _names(tracking, experiment_id)) == 5


@pytest.mark.parametrize("direction", ["ASC", "DESC"])
async def test_small_pages_cross_from_values_to_missing_ones(
    tracking, experiment_id, direction: str
) -> None:
    values = {"a": 3.0, "b": 1.0, "c": 2.0, "d": 2.0, "e": math.nan}
    for name, value in values.items():
        await _run(tracking, experiment_id, name, {"m": value})
    for name in ("f", "g"):
        await _run(tracking, experiment_id, name)
    names, token = [], None
    while True:
        page = await tracking.search_runs(
            [experiment_id], order_by=[f"metrics.m {direction}"], max_results=2, page_token=token
        )
        names += [r.info.run_name for r in page]
        token = page.token
        if not token:
            break
    present = sorted(["a", "b", "c", "d"], key=lambda n: values[n], reverse=direction == "DESC")
    assert sorted(names) == [*sorted(values), "f", "g"] and len(names) == 7
    assert [values[n] for n in names[:4]] == [values[n] for n in present]
    assert names[4] == "e" and set(names[5:]) == {"f", "g"}  # NaN, then no value


async def test_runs_are_found_by_what_they_used(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """Lineage: a term on inputs holds when one of the run's inputs meets it."""
    train = "cairn-artifacts://default/data/train.csv"
    both = await _run(tracking, experiment_id, "both")
    await tracking.log_inputs(
        both,
        [
            RunInput(train, kind="dataset", name="train", context="training"),
            RunInput("s3://bucket/eval.csv", kind="dataset", name="eval", context="evaluation"),
        ],
    )
    model = await _run(tracking, experiment_id, "model-only")
    await tracking.log_inputs(model, [RunInput("models:/churn/3", kind="model", name="churn")])
    bare = await _run(tracking, experiment_id, "bare")

    async def found(text: str) -> set[str]:
        return {r.info.run_id for r in await tracking.search_runs([experiment_id], text)}

    assert await found(f"inputs.uri = '{train}'") == {both}
    assert await found("inputs.kind = 'dataset' AND inputs.context = 'evaluation'") == {both}
    assert await found("inputs.kind = 'model' OR inputs.name LIKE 'tr%'") == {both, model}
    assert await found("inputs.kind != 'model'") == {both}
    assert await found("inputs.uri IS NULL") == {bare}
    assert await found("inputs.name IS NOT NULL AND run_name != 'both'") == {model}
    for bad in ("inputs.size = 'x'", "inputs.uri > 3"):
        with pytest.raises(InvalidArgumentError) as refused:
            await tracking.search_runs([experiment_id], bad)
        assert refused.value.reason == "INVALID_FILTER"
    with pytest.raises(InvalidArgumentError) as unordered:
        await tracking.search_runs([experiment_id], "", order_by=["inputs.uri"])
    assert unordered.value.reason == "INVALID_ORDER_BY"


async def test_mlflows_other_names_of_fields_are_understood(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """MLflow's filters and orders may name a run's dataset inputs `datasets.` (or
    `dataset.`) with their name, digest or context, its start time `created` and its name
    `run name`. Before, each was refused: INVALID_FILTER "unknown entity 'datasets'" and
    "unknown run attribute 'created'", INVALID_ORDER_BY for `created`."""
    early = (await tracking.create_run(experiment_id, 1000, run_name="early")).info.run_id
    await tracking.log_inputs(
        early, [RunInput("s3://b/train.csv", "dataset", "custom", "s8ds293b", "train")]
    )
    late = (await tracking.create_run(experiment_id, 2000, run_name="late")).info.run_id
    # Not a dataset: `datasets.` terms pass over it, as MLflow's datasets hold no models.
    await tracking.log_inputs(late, [RunInput("models:/m/1", "model", "custom", "d", "train")])

    async def found(text: str) -> list[str]:
        return await _names(tracking, experiment_id, text)

    assert await found("datasets.name = 'custom'") == ["early"]
    assert await found("dataset.context = 'train'") == ["early"]
    assert await found("datasets.digest IN ('s8ds293b', 'x')") == ["early"]
    assert await found("datasets.name != 'other' AND datasets.context LIKE 'tr%'") == ["early"]
    assert await found("datasets.digest NOT IN ('x') AND datasets.name ILIKE 'CUSTOM'") == ["early"]
    assert await found("datasets.name IS NULL") == ["late"]
    for bad in ("datasets.uri = 's3://b/train.csv'", "datasets.kind = 'dataset'"):
        with pytest.raises(InvalidArgumentError) as refused:
            await tracking.search_runs([experiment_id], bad)
        assert refused.value.reason == "INVALID_FILTER"
    with pytest.raises(InvalidArgumentError) as unordered:
        await tracking.search_runs([experiment_id], "", order_by=["datasets.name"])
    assert unordered.value.reason == "INVALID_ORDER_BY"

    assert await found("attributes.created > 1500") == ["late"]
    assert await found("Created < 1500") == ["early"]
    assert await found("attributes.`run name` = 'early'") == ["early"]
    assert await found("`Run name` LIKE 'l%' OR attr.`Run Name` = 'x'") == ["late"]
    for order, expected in (
        ("created", ["early", "late"]),
        ("Created ASC", ["early", "late"]),
        ("attributes.created DESC", ["late", "early"]),
        ("`run name` DESC", ["late", "early"]),
    ):
        assert await _names(tracking, experiment_id, order_by=[order]) == expected
    # A field left empty is unset: IS NULL finds it, and no comparison matches it (it
    # matched both `datasets.context IS NULL` and `datasets.context = ''`).
    bare = (await tracking.create_run(experiment_id, 3000, run_name="bare")).info.run_id
    await tracking.log_inputs(bare, [RunInput("s3://b/x.csv", "dataset", "x")])
    assert await found("datasets.context IS NULL AND datasets.name = 'x'") == ["bare"]
    for never in ("datasets.context = ''", "datasets.digest != 'd'", "inputs.context LIKE '%'"):
        assert "bare" not in await found(never), never


async def test_a_run_id_in_a_filter_is_read_in_any_case_as_every_call_reads_it(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """get_run took the id in capitals, and the filter found nothing by it."""
    run_id = (await tracking.create_run(experiment_id)).info.run_id
    other = (await tracking.create_run(experiment_id)).info.run_id
    upper = run_id.upper()
    for text in (f"run_id = '{upper}'", f"attributes.run_id IN ('{upper}', 'x')"):
        assert [r.info.run_id for r in await tracking.search_runs([experiment_id], text)] == [
            run_id
        ], text
    assert len(await tracking.search_runs([experiment_id], f"run_id != '{upper}'")) == 1
    # Whole ids are looked up by the runs' key: the same answers.
    assert len(await tracking.search_runs([experiment_id], f"run_id NOT IN ('{upper}')")) == 1
    both = f"run_id IN ('{upper}', '{other.upper()}')"
    assert {r.info.run_id for r in await tracking.search_runs([experiment_id], both)} == {
        run_id,
        other,
    }


async def test_a_run_without_a_user_has_no_user_id_to_filters_and_orders(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """A run made without a user holds '', which the client reads as no user (the CLI
    prints null), as the registry reads an empty text field. Before, filters and orders
    read it as the value '': user_id IS NULL found no run, IS NOT NULL, = '', != 'x',
    NOT IN, NOT LIKE and < 'b' found it, and it sorted first in ascending order, where a
    field a run lacks sorts last."""
    anonymous = (await tracking.create_run(experiment_id, run_name="anonymous")).info
    assert anonymous.user_id == ""
    await tracking.create_run(experiment_id, run_name="alice", user_id="alice")
    await tracking.create_run(experiment_id, run_name="zed", user_id="zed")

    async def found(text: str) -> set[str]:
        return set(await _names(tracking, experiment_id, text))

    assert await found("attributes.user_id IS NULL") == {"anonymous"}
    assert await found("user_id IS NOT NULL") == {"alice", "zed"}
    assert await found("user_id = ''") == set()
    assert await found("user_id IN ('', 'alice')") == {"alice"}
    assert await found("user_id < 'b'") == {"alice"}
    for others in ("user_id != 'x'", "user_id NOT IN ('x')", "user_id NOT LIKE 'x%'"):
        assert await found(others) == {"alice", "zed"}
    assert await found("user_id = 'alice' OR user_id IS NULL") == {"alice", "anonymous"}
    for direction, present in (("ASC", ["alice", "zed"]), ("DESC", ["zed", "alice"])):
        order = [f"attributes.user_id {direction}"]
        assert await _names(tracking, experiment_id, order_by=order) == [*present, "anonymous"]
        seen, token = [], None
        while True:  # a page a run: the token carries the missing user's place
            page = await tracking.search_runs(
                [experiment_id], order_by=order, max_results=1, page_token=token
            )
            seen += [r.info.run_name for r in page]
            if not (token := page.token):
                break
        assert seen == [*present, "anonymous"]


@pytest.mark.parametrize(
    "order",
    [
        "metrics.",
        "attributes.colour",
        "metrics.acc SIDEWAYS",
        "(",
        "params." + "k" * 4096,  # past the filter length limit, which order_by shares
    ],
)
async def test_a_bad_order_is_invalid_order_by(
    tracking: cairn.TrackingClient, experiment_id: str, order: str
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.search_runs([experiment_id], "", order_by=[order])
    assert refused.value.reason == "INVALID_ORDER_BY"
    assert "invalid order_by" in refused.value.message


async def test_a_search_names_at_most_1000_experiments(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    ids = [experiment_id] + [str(n) for n in range(2**62, 2**62 + 999)]
    await tracking.search_runs(ids, "")
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.search_runs([*ids, "1"], "")
    assert refused.value.reason == "INVALID_ARGUMENT"
    assert "experiment_ids" in refused.value.message


async def test_a_columnar_page_holds_the_runs_a_page_of_runs_holds(
    tracking, experiment_id, zoo
) -> None:
    """Whatever a run holds (nothing, NaN, infinities, inputs, a parent, an end, a
    deletion), a page in columns decodes to the runs the page of Run messages holds, in
    the same order."""
    child = (await tracking.create_run(experiment_id, parent_run_id=zoo["a"])).info.run_id
    await tracking.log_inputs(
        child, [RunInput("s3://b/train.csv", "dataset", "train", "sha256:0", "training")]
    )
    await tracking.log_inputs(zoo["b"], [RunInput("s3://b/a"), RunInput("s3://b/b", "model")])
    await tracking.delete_run(zoo["e"])
    request = api.SearchRunsRequest(
        project=tracking.project,
        experiment_ids=[experiment_id],
        view_type="VIEW_TYPE_ALL",
        order_by=["metrics.acc DESC"],
    )
    runs = await tracking._stub.SearchRuns(request)
    request.columnar = True
    columns = await tracking._stub.SearchRuns(request)

    assert not runs.HasField("columns") and not columns.runs
    decoded = runs_from_search(columns)
    # repr: NaN is not equal to itself, its text is. A page of runs is what a server
    # that predates columns answers: the client reads both.
    assert repr(decoded) == repr(runs_from_search(runs))
    assert repr(decoded) == repr([run_from_proto(r) for r in runs.runs])
    assert len(decoded) == 6
    assert [r.info.lifecycle_stage for r in decoded].count("deleted") == 1
    assert {r.info.parent_run_id for r in decoded} == {None, zoo["a"]}


async def test_a_columnar_page_of_no_runs_is_empty(tracking, experiment_id) -> None:
    request = api.SearchRunsRequest(
        project=tracking.project, experiment_ids=[experiment_id], columnar=True
    )
    reply = await tracking._stub.SearchRuns(request)
    assert reply.HasField("columns") and runs_from_search(reply) == []


async def test_a_like_pattern_ending_in_a_lone_backslash_is_invalid_filter(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """PostgreSQL refuses such a pattern once a row's text runs past its prefix (it was
    INTERNAL); a backslash before %, _ or itself matches that character."""
    await _run(tracking, experiment_id, "r", params={"model": "abc%d", "path": "c:\\"})
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.search_runs([experiment_id], "params.model LIKE 'abc\\'")
    assert refused.value.reason == "INVALID_FILTER"
    assert refused.value.metadata["position"] == "22"  # the backslash
    assert await _names(tracking, experiment_id, "params.model LIKE 'abc\\%d'") == ["r"]
    assert await _names(tracking, experiment_id, "params.model LIKE 'abc\\_d'") == []
    assert await _names(tracking, experiment_id, "params.path LIKE 'c:\\\\'") == ["r"]


def _encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_hostile_page_tokens_are_invalid_page_token(
    tracking: cairn.TrackingClient, experiment_id: str, pool: asyncpg.Pool
) -> None:
    """A token nested too deep for the JSON decoder, or holding a text value no UTF-8
    encoder takes (a lone surrogate), was INTERNAL. Sealed with the service's key, as
    only a leaked key would let a caller seal them."""
    for model in ("a", "b"):
        await _run(tracking, experiment_id, model, params={"model": model})
    order = ["params.model"]
    page = await tracking.search_runs([experiment_id], max_results=1, order_by=order)
    assert page.token is not None
    bare = unsealed(page.token)
    payload = json.loads(base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4)))
    assert payload["k"][1] == "a"  # the sort key: missing flag, value, run id
    payload["k"][1] = "\ud800"
    for hostile in (_encoded(json.dumps(payload).encode()), _encoded(b"[" * 3000)):
        token = await sealed_by(pool, "tracking", hostile)
        with pytest.raises(InvalidArgumentError) as refused:
            await tracking.search_runs(
                [experiment_id], max_results=1, order_by=order, page_token=token
            )
        assert refused.value.reason == "INVALID_PAGE_TOKEN"


async def test_a_metric_orders_token_from_before_nan_ranked_apart_is_refused(
    tracking: cairn.TrackingClient, experiment_id: str, pool: asyncpg.Pool
) -> None:
    """A token of a metric's order made when NaN and no value ranked alike would be
    misread now (its rank 1 named both; now it names NaN alone), and could repeat runs:
    its query's fingerprint differs, so it is refused."""
    for name in ("a", "b"):
        await _run(tracking, experiment_id, name, {"m": 1.0})
    order = ["metrics.m DESC"]
    page = await tracking.search_runs([experiment_id], max_results=1, order_by=order)
    assert page.token is not None
    bare = unsealed(page.token)
    payload = json.loads(base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4)))
    before = ("runs", "default", [int(experiment_id)], "", order, int(ViewType.ACTIVE_ONLY))
    text = json.dumps(before, sort_keys=True, default=str)
    payload["q"] = hashlib.sha256(text.encode()).hexdigest()[:16]
    token = await sealed_by(pool, "tracking", _encoded(json.dumps(payload).encode()))
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.search_runs([experiment_id], max_results=1, order_by=order, page_token=token)
    assert refused.value.reason == "INVALID_PAGE_TOKEN"


async def test_a_token_from_before_ties_went_newest_first_is_refused(
    tracking: cairn.TrackingClient, experiment_id: str, pool: asyncpg.Pool
) -> None:
    """A token of a param's order made when ties went by run id alone ends at a key
    without the start time: read now, it could skip or repeat runs, so it is refused."""
    await _runs_started_in_turn(tracking, experiment_id, ["cnn"] * 2)
    order = ["params.model"]
    page = await tracking.search_runs([experiment_id], max_results=1, order_by=order)
    assert page.token is not None
    bare = unsealed(page.token)
    payload = json.loads(base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4)))
    del payload["k"][-2]  # the start time, before the run id
    token = await sealed_by(pool, "tracking", _encoded(json.dumps(payload).encode()))
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.search_runs([experiment_id], max_results=1, order_by=order, page_token=token)
    assert refused.value.reason == "INVALID_PAGE_TOKEN"


async def test_start_times_past_a_floats_precision_compare_exactly(
    tracking: cairn.TrackingClient,
) -> None:
    experiment_id = await tracking.create_experiment("exact-times")
    times = [2**53, 2**53 + 1, 2**63 - 2]
    for time in times:
        await tracking.create_run(experiment_id, start_time=time, run_name=str(time))
    for wanted in times:
        found = await tracking.search_runs(experiment_id, f"attributes.start_time = {wanted}")
        assert [run.info.run_name for run in found] == [str(wanted)]


async def test_runs_order_by_the_name_of_their_status(tracking, experiment_id) -> None:
    """As MLflow's, which stores the names: FAILED, FINISHED, KILLED, RUNNING."""
    for name, status in (("r", None), ("f", "FINISHED"), ("x", "FAILED"), ("k", "KILLED")):
        await _run(tracking, experiment_id, name, status=status)
    for direction, expected in (("ASC", "xfkr"), ("DESC", "rkfx")):
        seen, token = [], None
        while True:  # a page a run: the token carries the status's place
            page = await tracking.search_runs(
                [experiment_id],
                order_by=[f"attributes.status {direction}"],
                max_results=1,
                page_token=token,
            )
            seen += [r.info.run_name for r in page]
            if not (token := page.token):
                break
        assert "".join(seen) == expected


async def test_mlflows_run_name_tag_is_the_runs_name(tracking, experiment_id) -> None:
    """MLflow keeps a run's name as the tag mlflow.runName too: it names a run, renames
    it, and filters and orders by the name. Cairn keeps the name alone."""
    named = (await tracking.create_run(experiment_id, run_name="b-named")).info.run_id
    tagged = await tracking.create_run(experiment_id, tags={"mlflow.runName": "c-tagged"})
    assert tagged.info.run_name == "c-tagged" and "mlflow.runName" not in tagged.data.tags
    with pytest.raises(InvalidArgumentError):
        await tracking.create_run(experiment_id, run_name="x", tags={"mlflow.runName": "y"})
    renamed = (await tracking.create_run(experiment_id, run_name="first")).info.run_id
    await tracking.set_tag(renamed, "mlflow.runName", "a-renamed")
    assert (await tracking.get_run(renamed)).info.run_name == "a-renamed"
    await tracking.log_batch(named, tags=[RunTag("mlflow.runName", "b-again"), RunTag("k", "v")])
    assert (await tracking.get_run(named)).data.tags == {"k": "v"}
    assert await _names(tracking, experiment_id, "tags.mlflow.runName = 'b-again'") == ["b-again"]
    assert await _names(tracking, experiment_id, "tags.`mlflow.runName` LIKE 'c-%'") == ["c-tagged"]
    ordered = await _names(tracking, experiment_id, order_by=["tags.mlflow.runName DESC"])
    assert ordered == ["c-tagged", "b-again", "a-renamed"]
    with pytest.raises(InvalidArgumentError):  # a run keeps its name
        await tracking.delete_tag(renamed, "mlflow.runName")
    assert (await tracking.get_run(renamed)).info.run_name == "a-renamed"


async def test_an_empty_run_name_tag_names_nothing_as_in_mlflow(tracking, experiment_id) -> None:
    """`set_tag(run, "mlflow.runName", "")`, a batch with it, or a run made with it was
    INVALID_ARGUMENT; MLflow's store takes it as no name: the run keeps its name, and a
    run made so gets one, as without the tag."""
    run = (await tracking.create_run(experiment_id, run_name="kept")).info.run_id
    await tracking.set_tag(run, "mlflow.runName", "")
    await tracking.log_batch(run, tags=[RunTag("mlflow.runName", ""), RunTag("k", "v")])
    kept = await tracking.get_run(run)
    assert kept.info.run_name == "kept" and kept.data.tags == {"k": "v"}
    made = await tracking.create_run(experiment_id, tags={"mlflow.runName": ""})
    assert made.info.run_name and "mlflow.runName" not in made.data.tags


def test_a_batch_renaming_its_run_has_the_fingerprint_it_had_as_a_tag() -> None:
    """A server of the version before kept the tag as any other: a batch it applied,
    retried after the update, is the same batch."""
    renaming = Batch(tags={"k": "v"}, run_name="x", request_id="r")
    as_tag = Batch(tags={"k": "v", "mlflow.runName": "x"}, request_id="r")
    assert renaming.fingerprint() == as_tag.fingerprint()


async def test_a_page_ordered_by_long_text_fetches_only_the_values_its_budget_holds(
    tracking: cairn.TrackingClient, experiment_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page ordered by tags fetched every candidate's sort values (page size + 1 runs,
    up to ten values of 8,000 characters each) before cutting the page to its load
    budget: 380 MB for one search of 1,000 runs. Only the runs whose values begin within
    the budget leave the database now; the pages still meet every run once, in order."""
    for n in range(10):
        run_id = (await tracking.create_run(experiment_id)).info.run_id
        await tracking.set_tag(run_id, "long", f"{n}" + "x" * 7_999)
    monkeypatch.setattr(paging, "MAX_PAGE_LOAD_BYTES", 20_000)  # two values, and a third
    fetched: list[int] = []
    page_rows = search._page_rows

    async def counted(*args: Any) -> Any:
        rows = await page_rows(*args)
        assert rows is not None  # a sort by tags: no walk that gives up
        fetched.append(len(rows))
        return rows

    monkeypatch.setattr(search, "_page_rows", counted)
    found, token = [], None
    while True:
        page = await tracking.search_runs(
            [experiment_id], order_by=["tags.long ASC"], max_results=10, page_token=token
        )
        found += [r.data.tags["long"][0] for r in page]
        token = page.token
        if not token:
            break
    assert found == [str(n) for n in range(10)]
    assert max(fetched) == 3  # the page's two, and the run past the budget that ends it


async def test_max_results_past_one_server_page_are_gathered_as_mlflow_answers_them(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    """MLflow's search_runs and search_experiments take max_results up to 50,000; a
    server page holds 1,000, and more was refused naming page_size, a parameter the
    caller never passed."""
    ids = [
        run.info.run_id
        for run in await asyncio.gather(*(tracking.create_run(experiment_id) for _ in range(1_005)))
    ]
    found = await tracking.search_runs([experiment_id], max_results=1_003)
    assert len(found) == 1_003 and found.token
    rest = await tracking.search_runs([experiment_id], max_results=2_000, page_token=found.token)
    assert {r.info.run_id for r in [*found, *rest]} == set(ids) and not rest.token
    experiments = await tracking.search_experiments(max_results=1_001)
    assert len(experiments) >= 1
    for wrong in (0, 50_001):
        with pytest.raises(InvalidArgumentError) as refused:
            await tracking.search_runs([experiment_id], max_results=wrong)
        assert "max_results" in refused.value.message


async def test_one_order_key_given_as_a_string_is_that_key(tracking, experiment_id, zoo) -> None:
    """It was read as a list of its characters: "unknown run attribute 's'"."""
    keys = await tracking.search_runs([experiment_id], order_by=["metrics.acc DESC"])
    alone = await tracking.search_runs([experiment_id], order_by="metrics.acc DESC")
    assert [r.info.run_id for r in alone] == [r.info.run_id for r in keys]


@pytest.mark.parametrize(
    ("budget", "sizes", "named"),
    # A run's name counts in its sort values, not in the page's stored size (entries
    # only): two runs of 8,000-byte tags and 500-byte names end their sort values at
    # 17,000 bytes, before their stored size (16,072) reaches the budget.
    [(17_000, [8_000, 8_000], True), (5_000, [8_000, 10], False)],
    ids=["to the budget", "past it alone"],
)
async def test_a_page_cut_at_its_sort_budget_is_continued(
    tracking: cairn.TrackingClient,
    experiment_id: str,
    monkeypatch: pytest.MonkeyPatch,
    budget: int,
    sizes: list[int],
    named: bool,
) -> None:
    """Runs whose sort values ended exactly at the budget, followed by runs without
    the key (no bytes), made a page that took them all but ended with no token: the
    query had left out every run after the budget, so the runs without the key were
    never met. Likewise after a first run past the budget alone."""
    monkeypatch.setattr(paging, "MAX_PAGE_LOAD_BYTES", budget)
    for n, size in enumerate(sizes):
        name = f"{n}" + "r" * 499 if named else None
        run_id = (await tracking.create_run(experiment_id, run_name=name)).info.run_id
        await tracking.set_tag(run_id, "long", f"{n}" + "x" * (size - 1))
    untagged = {(await tracking.create_run(experiment_id)).info.run_id for _ in range(3)}
    order_by = ["tags.long ASC", *(["attributes.run_name ASC"] if named else [])]
    found, token = [], None
    while True:
        page = await tracking.search_runs(
            [experiment_id], order_by=order_by, max_results=10, page_token=token
        )
        found += [r.info.run_id for r in page]
        token = page.token
        if not token:
            break
    assert len(found) == 5 and untagged <= set(found)


@pytest.mark.parametrize(
    ("order_by", "named"),
    [
        (["params.a", "params.a DESC"], "params.a"),
        (["metrics.`m` ASC", "metric.m"], "metrics.m"),
        (["start_time", "created DESC"], "start_time"),  # one field by two names
        (["tags.`mlflow.runName`", "attributes.run_name"], "run_name"),
    ],
)
async def test_an_order_naming_a_field_twice_is_refused(
    tracking: cairn.TrackingClient, experiment_id: str, order_by: list[str], named: str
) -> None:
    """As MLflow refuses it ("order_by contains duplicate fields"), and as an order of
    experiments is: the second term did nothing, and searched with it, unsaid."""
    with pytest.raises(InvalidArgumentError) as refused:
        await tracking.search_runs([experiment_id], "", order_by=order_by)
    assert refused.value.reason == "INVALID_ORDER_BY"
    assert f"{named} is ordered by twice" in refused.value.message
