"""The registry's pure rules for ids, object sizes and list pages that fit a response."""

import pytest

from cairn.registry.v1 import registry_pb2
from cairn_server.common import paging
from cairn_server.common.errors import InvalidArgument
from cairn_server.common.paging import ListPage
from cairn_server.registry import validation
from cairn_server.registry.store.common import id_or_none


@pytest.mark.parametrize(
    ("spelling", "row"),
    [
        ("1", 1),
        ("42", 42),
        ("9" * 18, int("9" * 18)),
        ("9" * 19, None),  # 19 digits may pass a bigint
        ("0", None),
        ("042", None),
        ("\u00b2", None),  # SUPERSCRIPT TWO: isdigit(), yet int() refuses it
        ("\u2460", None),  # CIRCLED DIGIT ONE
        ("\u0661\u0662", None),  # Arabic-Indic "12": int() reads it as 12
        ("12\n", None),
        (" 12", None),
        ("", None),
    ],
)
def test_an_id_has_one_spelling(spelling: str, row: int | None) -> None:
    assert id_or_none(spelling) == row


def test_object_bytes_count_utf8_and_eight_for_other_values() -> None:
    assert validation.object_bytes({"é": "ü", "n": 3, "b": True}, {"k": "€"}) == 4 + 9 + 9 + 4
    limit = validation.MAX_OBJECT_BYTES
    validation.object_size({"k": "x" * (limit - 1)}, {}, "f")
    with pytest.raises(InvalidArgument) as raised:
        validation.object_size({"k": "x" * (limit - 1)}, {"t": ""}, "f")
    assert raised.value.violations[0].field == "f"


def test_a_page_is_cut_before_the_item_past_the_budget() -> None:
    items = [registry_pb2.RegisteredModel(name="x" * 98) for _ in range(3)]  # 100 bytes each
    assert paging.fitting(items, 318) == 3
    assert paging.fitting(items, 317) == 2
    assert paging.fitting(items, 1) == 1  # one item at least, or a list could not go on
    page = ListPage(["a", "b", "c"], "after-c", lambda count: f"after-{'abc'[count - 1]}")
    cut = page.first(2)
    assert (cut.items, cut.next_page_token) == (["a", "b"], "after-b")
    assert page.first(3) is page
