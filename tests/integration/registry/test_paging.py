"""The Kubeflow client's documented paging behaviours, with keyset tokens."""

import pytest

import cairn
from cairn.exceptions import InvalidArgumentError
from cairn.types import ListOptions, OrderByField, Pager, RegisteredModel


async def _models(mr_client: cairn.ModelRegistryAPIClient, count: int) -> list[RegisteredModel]:
    return [
        await mr_client.upsert_registered_model(RegisteredModel(f"model-{n:02}"))
        for n in range(count)
    ]


async def test_21_items_at_page_size_10_are_exactly_3_pages(mr_client) -> None:
    await _models(mr_client, 21)
    calls = []

    async def page(options: ListOptions):
        calls.append(options.next_page_token)
        return await mr_client.get_registered_models(options)

    pager = Pager(page).limit(10)
    sizes = []
    while not pager.done:
        sizes.append(len(await pager.next_page()))
    assert sizes == [10, 10, 1]
    assert len(calls) == 3
    assert await pager.next_page() == [] and len(calls) == 3


async def test_empty_registry_and_a_short_list_end_cleanly(mr_client) -> None:
    calls = 0

    async def page(options: ListOptions):
        nonlocal calls
        calls += 1
        return await mr_client.get_registered_models(options)

    assert [m async for m in Pager(page)] == []
    assert calls == 1
    await _models(mr_client, 3)
    assert len([m async for m in Pager(page).limit(10)]) == 3
    assert calls == 2


async def test_update_time_order_flips_after_updates_in_reverse(mr_client) -> None:
    created = await _models(mr_client, 5)
    by_update = Pager(mr_client.get_registered_models).order_by_update_time()
    assert [m.name async for m in by_update] == [m.name for m in created]
    for model in reversed(created):
        model.description = "touched"
        await mr_client.upsert_registered_model(model)
    assert [m.name async for m in by_update.restart()] == [m.name for m in reversed(created)]
    descending = Pager(mr_client.get_registered_models).order_by_update_time().descending()
    assert [m.name async for m in descending] == [m.name for m in created]


async def test_order_by_takes_the_fields_names_kubeflow_passes_as_strings(mr_client) -> None:
    """A string (Kubeflow's OrderByField is a str enum of them) was a bare KeyError."""
    created = await _models(mr_client, 3)
    for model in reversed(created):
        model.description = "touched"
        await mr_client.upsert_registered_model(model)
    for named, field in [
        ("CREATE_TIME", OrderByField.CREATE_TIME),
        ("LAST_UPDATE_TIME", OrderByField.UPDATE_TIME),
        ("UPDATE_TIME", OrderByField.UPDATE_TIME),
        ("ID", OrderByField.ID),
    ]:
        by_name = await mr_client.get_registered_models(ListOptions(order_by=named))
        by_field = await mr_client.get_registered_models(ListOptions(order_by=field))
        assert [m.name for m in by_name] == [m.name for m in by_field]
    with pytest.raises(InvalidArgumentError) as refused:
        await mr_client.get_registered_models(ListOptions(order_by="NAME"))
    assert refused.value.field_violations[0][0] == "order_by"
    assert "LAST_UPDATE_TIME" in str(refused.value) and "'NAME'" in str(refused.value)


async def test_restart_mid_way(mr_client) -> None:
    await _models(mr_client, 6)
    pager = Pager(mr_client.get_registered_models).order_by_id().limit(4)
    first = await pager.next_page()
    pager.restart()
    assert await pager.next_page() == first
    assert len(await pager.next_page()) == 2
    assert pager.done


async def test_pages_stay_correct_while_models_are_added(mr_client) -> None:
    await _models(mr_client, 6)
    options = ListOptions(limit=4)
    first = await mr_client.get_registered_models(options)
    await mr_client.upsert_registered_model(RegisteredModel("added-later"))
    second = await mr_client.get_registered_models(options)
    assert [m.name for m in first] == [f"model-{n:02}" for n in range(4)]
    assert [m.name for m in second] == ["model-04", "model-05", "added-later"]
    assert options.next_page_token is None
