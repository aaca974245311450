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


@pytest.mark.parametrize(
    ("order_by", "position", "found"),
    [
        ("name DE\u017fC", 5, "'DE\u017fC'"),  # a long s, which MLflow upper-cases to DESC
        ("name asc extra", 9, "'extra'"),
        ("name desc;", 9, "';'"),
        ("colour desc", 0, "'colour'"),
    ],
)
async def test_an_order_refused_says_where_and_what_and_names_mlflows_keys(
    mr_client, order_by: str, position: int, found: str
) -> None:
    """The refusal said "invalid order_by at position 0: order by one of create_time,
    update_time, id, name" whatever was wrong and wherever: the parser's position and
    word were dropped, and MLflow's names of the keys, which the list takes, left out."""
    with pytest.raises(InvalidArgumentError) as raised:
        await mr_client.search_registered_models(order_by=[order_by])
    message = raised.value.message
    assert raised.value.reason == "INVALID_ORDER_BY"
    assert raised.value.metadata["position"] == str(position), message
    assert f"at position {position}:" in message
    assert found in message
    assert "last_updated_timestamp" in message
    assert "creation_timestamp" in message
