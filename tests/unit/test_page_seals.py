"""Sealed page tokens: only a token the service's key sealed is opened, unchanged."""

import pytest
from google.protobuf import descriptor_pool

from cairn_server import catalog
from cairn_server.common.errors import InvalidArgument
from cairn_server.common.page_seals import opened, paged, seal

KEY = bytes(range(32))
TOKEN = "eyJxIjoiYWJjIiwiayI6WzEsImEiXX0"  # what paging.py writes: unpadded URL-safe base64


def _refused(sealed: str, key: bytes = KEY) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        opened(key, sealed)
    return raised.value


def test_a_sealed_token_opens_to_itself() -> None:
    sealed = seal(KEY, TOKEN)
    assert len(sealed) == len(TOKEN) + 23  # the dot, and 16 bytes in unpadded base64
    assert opened(KEY, sealed) == TOKEN


def test_the_last_page_and_the_first_stay_empty() -> None:
    assert seal(KEY, "") == ""
    assert opened(KEY, "") == ""


@pytest.mark.parametrize("position", range(len(seal(KEY, TOKEN))))
def test_any_character_changed_is_refused(position: int) -> None:
    sealed = seal(KEY, TOKEN)
    changed = "B" if sealed[position] != "B" else "C"
    refused = _refused(sealed[:position] + changed + sealed[position + 1 :])
    assert refused.reason == "INVALID_PAGE_TOKEN"
    assert refused.violations[0].field == "page_token"


@pytest.mark.parametrize(
    "edit",
    [
        lambda sealed: sealed.rpartition(".")[0],  # a bare token, as the release before wrote
        lambda sealed: sealed + "A",
        lambda sealed: sealed[:-1],
        lambda sealed: "." + sealed,
        lambda sealed: sealed.replace(".", ".."),
        # Non-ASCII text, which hmac.compare_digest refuses to compare as str (TypeError:
        # INTERNAL); the rest of the token is what a caller may send too.
        lambda sealed: sealed + "é",
        lambda sealed: sealed.rpartition(".")[0] + ".\u00e9\U0001f600",
    ],
)
def test_a_token_cut_lengthened_or_unsealed_is_refused(edit) -> None:
    assert _refused(edit(seal(KEY, TOKEN))).reason == "INVALID_PAGE_TOKEN"


def test_another_keys_seal_is_refused() -> None:
    assert _refused(seal(bytes(32), TOKEN)).reason == "INVALID_PAGE_TOKEN"


def test_every_list_is_a_unary_call_answering_a_next_page_token() -> None:
    """The interceptor seals the unary calls that take a page_token: a list that
    streamed, answered its token in another field, or answered one without taking one,
    would go out unsealed."""
    found = []
    for spec in catalog.select([]):
        for method in descriptor_pool.Default().FindServiceByName(spec.full_name).methods:
            if not paged(f"/{spec.full_name}/{method.name}"):
                # A token answered by a method the seal does not wrap would go out bare.
                assert "next_page_token" not in method.output_type.fields_by_name, method.name
                continue
            found.append(method.name)
            assert not method.client_streaming and not method.server_streaming, method.name
            assert "next_page_token" in method.output_type.fields_by_name, method.name
    assert {"SearchRuns", "ListRegisteredModels", "ListObjects", "GetApiKeys"} <= set(found)
    assert len(found) >= 10


def test_only_lists_are_paged() -> None:
    assert paged("/cairn.tracking.v1.TrackingService/SearchRuns")
    assert not paged("/cairn.tracking.v1.TrackingService/GetRun")
    assert not paged("/grpc.health.v1.Health/Check")
    assert not paged("/no.such.Service/Method")
