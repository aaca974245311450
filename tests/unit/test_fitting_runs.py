"""fitting_runs keeps a SearchRuns response within its budget, in either form, whatever
the runs' strings (characters of one to four bytes in UTF-8) and the length of the token
after its last run."""

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.tracking.v1 import tracking_service_pb2 as api
from cairn_server.tracking import convert
from cairn_server.tracking.fitting import fitting_runs
from cairn_server.tracking.model import LifecycleStage, RunInfo, RunStatus
from cairn_server.tracking.store.pages import Logged, RunPage
from tests.unit.utf8 import text


@st.composite
def pages(draw: st.DrawFn) -> RunPage:
    runs = draw(st.integers(1, 8))
    infos = [
        RunInfo(
            "default",
            f"{n:032x}",
            "1",
            draw(text),
            draw(text),
            RunStatus.FINISHED,
            n,
            None,
            draw(text),
            LifecycleStage.ACTIVE,
            None,
        )
        for n in range(runs)
    ]

    def table(*columns: st.SearchStrategy) -> Logged:
        rows = draw(st.lists(st.tuples(st.integers(1, runs), *columns), max_size=10))
        rows.sort(key=lambda row: row[0])
        positions, *values = zip(*rows, strict=True) if rows else [[]] * (len(columns) + 1)
        return Logged.of(runs, list(positions), *map(list, values))

    number = st.floats(allow_nan=True)
    when = st.integers(0, 2**62)
    return RunPage(
        infos,
        table(text, number, when, when),
        table(text, text),
        table(text, text),
        table(text, text, text, text, text),
    )


def _sizes(page: RunPage, token: str = "") -> tuple[int, int]:
    runs = [convert.run(run) for run in page.runs()]
    by_run = api.SearchRunsResponse(runs=runs, next_page_token=token)
    by_column = api.SearchRunsResponse(
        columns=convert.run_columns(page, "default"), next_page_token=token
    )
    return by_run.ByteSize(), by_column.ByteSize()


def _tokens(page: RunPage, shares: list[float]) -> Callable[[int], int]:
    """Token lengths after each count of the page's runs, as shares of the page's size
    (no token after the whole page)."""
    whole = max(_sizes(page))
    lengths = [int(whole * share) for share in shares] + [0]
    return lambda count: lengths[count - 1] if count < len(page.infos) else 0


@settings(max_examples=150, deadline=None)
@given(pages(), st.floats(0.0, 1.2), st.lists(st.floats(0.0, 1.0), min_size=8, max_size=8))
def test_the_runs_kept_fit_the_budget_in_either_form(
    page: RunPage, share: float, token_shares: list[float]
) -> None:
    budget = int(max(_sizes(page)) * share)
    token_bytes = _tokens(page, token_shares)
    kept = fitting_runs(page, token_bytes, budget=budget)
    assert 1 <= kept <= len(page.infos)
    if kept > 1:
        assert max(_sizes(page.head(kept), "t" * token_bytes(kept))) <= budget


@settings(max_examples=30)
@given(pages())
def test_a_page_within_its_budget_is_kept_whole(page: RunPage) -> None:
    assert fitting_runs(page, lambda count: 0, budget=2**40) == len(page.infos)


@settings(max_examples=30)
@given(pages(), st.integers(0, 8))
def test_the_head_of_a_page_is_its_first_runs(page: RunPage, runs: int) -> None:
    runs = min(runs, len(page.infos))
    assert page.head(runs).runs() == page.runs()[:runs]
