"""The Pager over scripted page functions: pages of 3, 0, 1 and 2 items, then the end."""

import asyncio

import pytest

from cairn._transport import Transport
from cairn.exceptions import InvalidArgumentError, UnknownError
from cairn.registry.v1.registry_service_pb2 import ListArtifactsRequest, ListArtifactsResponse
from cairn.types import ListOptions, OrderByField, PagedList, Pager

PAGES = [["a", "b", "c"], [], ["d"], ["e", "f"]]


class _Script:
    """A page function answering from PAGES by token, recording every call."""

    def __init__(self) -> None:
        self.calls: list[ListOptions] = []

    def page(self, options: ListOptions) -> PagedList[str]:
        self.calls.append(ListOptions(**vars(options)))
        index = int(options.next_page_token or 0)
        following = str(index + 1) if index + 1 < len(PAGES) else None
        return PagedList(PAGES[index], following)

    async def apage(self, options: ListOptions) -> PagedList[str]:
        return self.page(options)


def test_sync_iteration_visits_every_page_once() -> None:
    script = _Script()
    assert list(Pager(script.page)) == ["a", "b", "c", "d", "e", "f"]
    assert [c.next_page_token for c in script.calls] == [None, "1", "2", "3"]


async def test_async_iteration_visits_every_page_once() -> None:
    script = _Script()
    assert [item async for item in Pager(script.apage)] == ["a", "b", "c", "d", "e", "f"]
    assert len(script.calls) == 4


async def test_a_lambda_around_an_async_call_works_with_async_for() -> None:
    script = _Script()
    pager = Pager(lambda options: script.apage(options))
    assert [item async for item in pager] == ["a", "b", "c", "d", "e", "f"]


async def test_next_page_then_the_end_without_another_call() -> None:
    script = _Script()
    pager = Pager(script.apage)
    pages = [await pager.next_page() for _ in range(5)]
    assert pages == [*PAGES, []]
    assert pager.done
    assert len(script.calls) == 4


def test_builders_set_options_and_restart() -> None:
    script = _Script()
    pager = Pager(script.page).order_by_update_time().descending().limit(7)
    pager.next_page()
    pager.next_page()
    pager.restart()
    pager.next_page()
    assert script.calls[-1].next_page_token is None
    assert script.calls[-1].order_by is OrderByField.UPDATE_TIME
    assert script.calls[-1].is_asc is False
    assert script.calls[-1].limit == 7


def test_limit_and_page_size_set_the_items_per_page_and_name_themselves() -> None:
    assert Pager(_Script().page).page_size(3).options.limit == 3
    assert Pager(_Script().page).limit(4).options.limit == 4
    for method in ("limit", "page_size"):
        with pytest.raises(InvalidArgumentError, match="at least 1") as refused:
            getattr(Pager(_Script().page), method)(0)
        # Named as called: .limit(0), as the seed writes it, named page_size before.
        assert refused.value.field_violations[0][0] == method
        for bad in ("5", 2.5, True):  # "5" was a bare TypeError of a comparison
            with pytest.raises(InvalidArgumentError) as wrong_type:
                getattr(Pager(_Script().page), method)(bad)
            assert wrong_type.value.field_violations[0][0] == method


def test_sync_for_over_an_async_function_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="async for"):
        list(Pager(_Script().apage))


def test_list_options_constructors() -> None:
    options = ListOptions.order_by_creation_time(is_asc=False)
    assert options.order_by is OrderByField.CREATE_TIME and options.is_asc is False
    assert ListOptions(limit=50).limit == 50
    assert PagedList([1], "t").token == "t"
    assert PagedList([1], "").next_page_token is None


def _repeating(options: ListOptions) -> PagedList[str]:
    """A server (or a proxy before it) that answers the first page's token for ever."""
    return PagedList(["x"], "same")


async def _arepeating(options: ListOptions) -> PagedList[str]:
    return _repeating(options)


def test_a_repeated_token_ends_sync_paging_with_a_clear_error() -> None:
    with pytest.raises(UnknownError) as raised:
        list(Pager(_repeating))
    assert raised.value.reason == "PAGE_TOKEN_REPEATED"


async def test_a_repeated_token_ends_async_paging_with_a_clear_error() -> None:
    with pytest.raises(UnknownError) as raised:
        [item async for item in Pager(_arepeating)]
    assert raised.value.reason == "PAGE_TOKEN_REPEATED"


async def test_a_token_cycle_ends_every_page_with_a_clear_error() -> None:
    answers = {"": "a", "a": "b", "b": "a"}  # a, b, a: round for ever

    async def list_call(request: ListArtifactsRequest, **_: object) -> ListArtifactsResponse:
        return ListArtifactsResponse(next_page_token=answers[request.page_token])

    transport = Transport.insecure("127.0.0.1", 1)  # never connects: no call goes out
    with pytest.raises(UnknownError) as raised:
        await transport.every_page(list_call, ListArtifactsRequest(), lambda reply: [])
    assert raised.value.reason == "PAGE_TOKEN_REPEATED"


async def test_two_walks_of_one_pager_at_once_end_with_an_error_that_says_so() -> None:
    """Both walks share the Pager's place: the error blamed the server alone."""
    script = _Script()
    both_asked, asked = asyncio.Event(), 0

    async def slow(options: ListOptions) -> PagedList[str]:
        nonlocal asked
        asked += 1
        if asked == 2:
            both_asked.set()
        if asked <= 2:  # both walks ask for the first page before either is answered
            await both_asked.wait()
        page = script.page(options)
        options.next_page_token = page.next_page_token  # as the clients' list calls do
        return page

    pager = Pager(slow)

    async def walk() -> list[str]:
        return [item async for item in pager]

    outcomes = await asyncio.gather(walk(), walk(), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, UnknownError)]
    assert len(refused) == 1 and refused[0].reason == "PAGE_TOKEN_REPEATED"
    assert "walked by two tasks or threads at once" in refused[0].message


def test_a_walk_stopped_goes_on_where_it_stopped() -> None:
    """The rest of the page it stopped in was dropped: a `break` after "a", then a walk
    again, gave "d", "e", "f" (Kubeflow's Pager, an iterator, goes on at "b")."""
    script = _Script()
    pager = Pager(script.page)
    for item in pager:
        assert item == "a"
        break
    assert next(pager) == "b"
    assert not pager.done
    assert pager.next_page() == ["c"]  # what iteration left of the page, as a page
    assert list(pager) == ["d", "e", "f"]
    assert [c.next_page_token for c in script.calls] == [None, "1", "2", "3"]


async def test_an_async_walk_stopped_goes_on_where_it_stopped() -> None:
    script = _Script()
    pager = Pager(script.apage)
    assert await anext(pager) == "a"
    async for item in pager:
        assert item == "b"
        break
    assert [item async for item in pager] == ["c", "d", "e", "f"]
    assert [item async for item in pager.restart()] == ["a", "b", "c", "d", "e", "f"]
