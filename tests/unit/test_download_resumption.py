"""Where a download cut midway goes on: the rest of its range, never more."""

from cairn._clients._downloads import _after
from cairn.artifacts.v1 import artifacts_service_pb2 as api


def _range(offset: int, length: int) -> api.DownloadRequest:
    return api.DownloadRequest(project="p", path="a.bin", offset=offset, length=length)


def test_a_range_goes_on_from_the_byte_reached_for_what_is_left_of_it() -> None:
    rest = _after(_range(100, 50), 20)
    assert rest is not None and (rest.offset, rest.length) == (120, 30)
    assert (rest.project, rest.path) == ("p", "a.bin")


def test_a_whole_object_goes_on_to_its_end() -> None:
    rest = _after(_range(0, 0), 4096)
    assert rest is not None and (rest.offset, rest.length) == (4096, 0)


def test_a_range_cut_after_its_last_byte_is_done_not_read_to_the_end() -> None:
    """A stream is cut while a message waits in gRPC: its client may take that last
    message before it reads the error. A length of 0 would then read the object's rest."""
    assert _after(_range(100, 50), 50) is None
