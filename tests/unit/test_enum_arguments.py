"""An enum argument is one of its members, a name of one, or its number; a value that
only compares equal to a number (True, 1.0) is none of them."""

from __future__ import annotations

import pytest

from cairn.exceptions import InvalidArgumentError
from cairn.types import ApiKeyExpirationTime, ViewType
from cairn.types._arguments import member


@pytest.mark.parametrize("given", [True, False, 1.0, 3.0, 1.5])
def test_a_boolean_or_a_float_is_no_member(given: object) -> None:
    """True and 1.0 equal 1, and the lookup by value took them for THIRTY_DAYS."""
    with pytest.raises(InvalidArgumentError) as refused:
        member(ApiKeyExpirationTime, given, "expiration_time")
    assert refused.value.field_violations[0][0] == "expiration_time"


def test_a_member_its_name_or_its_number_is_taken() -> None:
    thirty = ApiKeyExpirationTime.THIRTY_DAYS
    for given in (thirty, "thirty_days", thirty.value):
        assert member(ApiKeyExpirationTime, given, "expiration_time") is thirty
    assert member(ViewType, 3, "run_view_type") is ViewType.ALL
