"""Ids the services answer are read back only as they wrote them: uuid.UUID reads many
other spellings, some of them another id (a space or "+" before it, "_" within)."""

import uuid

import pytest

from cairn_server.common import validation
from cairn_server.common.errors import InvalidArgument

ID = uuid.UUID("501a967c1b2e4f00a1b2c3d4e5f60789")


def _arabic(text: str) -> str:
    return "".join(chr(0x660 + int(c)) if c.isdigit() else c for c in text)


MISSPELT = [
    " " + ID.hex[1:],
    "+" + ID.hex[1:],
    ID.hex[:4] + "_" + ID.hex[5:],
    "{" + ID.hex + "}",
    f"urn:uuid:{ID}",
    ID.hex.upper(),
    _arabic(ID.hex),
    ID.hex + "\n",
    "",
]


@pytest.mark.parametrize("text", MISSPELT)
def test_an_id_spelt_otherwise_than_written_is_none(text: str) -> None:
    assert validation.uuid_as_written(text) is None
    assert validation.uuid_as_written(text, hyphenated=True) is None


def test_an_id_as_written_is_read() -> None:
    assert validation.uuid_as_written(ID.hex) == ID
    assert validation.uuid_as_written(str(ID), hyphenated=True) == ID
    assert validation.uuid_as_written(str(ID)) is None  # each id has one form


@pytest.mark.parametrize("text", MISSPELT)
def test_an_upload_id_spelt_otherwise_is_invalid_naming_its_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validation.uuid_field(text, "upload_id", "the upload_id CreatePresignedUrl returned")
    assert [violation.field for violation in refused.value.violations] == ["upload_id"]
