"""A bad order_by in the registry is INVALID_ORDER_BY, the reason the contract declares
for it, never the filter's INVALID_FILTER."""

import pytest

from cairn.exceptions import InvalidArgumentError


@pytest.mark.parametrize("order_by", ["colour", "name sideways", "name asc extra"])
async def test_registered_models_refuse_an_unknown_order(mr_client, order_by: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await mr_client.search_registered_models(order_by=[order_by])
    assert raised.value.reason == "INVALID_ORDER_BY"
    assert "order_by" in raised.value.message


async def test_model_versions_refuse_an_unknown_order(mr_client) -> None:
    await mr_client.create_registered_model("ordered")
    with pytest.raises(InvalidArgumentError) as raised:
        await mr_client.search_model_versions("name = 'ordered'", order_by=["colour desc"])
    assert raised.value.reason == "INVALID_ORDER_BY"
