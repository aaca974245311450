"""Auth's listings bound a page by its length alone: the longest page of the longest
values the validation admits still fits the least message a server may be set to."""

from google.protobuf.timestamp_pb2 import Timestamp

from cairn.auth.v1 import auth_pb2, auth_service_pb2
from cairn_server.auth import servicer, validation
from cairn_server.common import paging

LEAST_MESSAGE_BYTES = 1024 * 1024  # the least CAIRN_MAX_MESSAGE_BYTES the config takes
WIDEST = "\U0010ffff"  # a character of 4 bytes in UTF-8, the most any takes
LONGEST_TOKEN = "t" * paging.MAX_TOKEN_LENGTH


def _latest() -> Timestamp:
    """A timestamp of the most bytes: the last second of year 9999, every nanosecond."""
    return Timestamp(seconds=253_402_300_799, nanos=999_999_999)


def test_a_page_of_the_longest_keys_fits_the_least_message() -> None:
    key = auth_pb2.ApiKey(
        prefix="0123456789ab",  # a prefix is 12 hex digits
        name=WIDEST * validation.MAX_KEY_NAME_LENGTH,
        user_id=WIDEST * validation.MAX_USER_ID_LENGTH,
        create_time=_latest(),
        expire_time=_latest(),
        revoke_time=_latest(),
    )
    page = auth_service_pb2.GetApiKeysResponse(
        api_keys=[key] * servicer.MAX_KEYS_PAGE_SIZE, next_page_token=LONGEST_TOKEN
    )
    assert page.ByteSize() < LEAST_MESSAGE_BYTES


def test_a_page_of_the_longest_members_fits_the_least_message() -> None:
    member = auth_pb2.ProjectMember(
        project="p" * 63,  # the longest project name, in ASCII
        user_id=WIDEST * validation.MAX_USER_ID_LENGTH,
        role=auth_pb2.PROJECT_ROLE_ADMIN,
    )
    page = auth_service_pb2.GetProjectMembersResponse(
        members=[member] * servicer.MAX_MEMBERS_PAGE_SIZE, next_page_token=LONGEST_TOKEN
    )
    assert page.ByteSize() < LEAST_MESSAGE_BYTES
