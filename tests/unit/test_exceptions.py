import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from cairn import exceptions
from cairn.exceptions import CairnError, NotFoundError, from_grpc_error


class _FakeRpcError(grpc.RpcError):
    """Stands in for grpc.aio.AioRpcError: the same four accessors."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return self._trailing


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c != grpc.StatusCode.OK])
def test_every_error_status_code_has_its_own_class(code: grpc.StatusCode) -> None:
    cls = exceptions.error_class(code)
    assert cls is not CairnError
    assert cls.grpc_status_code == code


def test_status_details_become_reason_metadata_and_violations() -> None:
    info, bad = any_pb2.Any(), any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(
            reason="RUN_NOT_FOUND", domain="cairn", metadata={"run_id": "r1"}
        )
    )
    bad.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="run_id", description="unknown")
            ]
        )
    )
    status = status_pb2.Status(code=5, message="run r1 not found", details=[info, bad])
    error = _FakeRpcError(
        grpc.StatusCode.NOT_FOUND,
        "run r1 not found",
        (("grpc-status-details-bin", status.SerializeToString()),),
    )
    converted = from_grpc_error(error)
    assert isinstance(converted, NotFoundError)
    assert isinstance(converted, LookupError)
    assert converted.reason == converted.error_code == "RUN_NOT_FOUND"
    assert converted.metadata == {"run_id": "r1"}
    assert converted.field_violations == [("run_id", "unknown")]
    assert converted.grpc_error is error
    assert str(converted) == "NOT_FOUND [RUN_NOT_FOUND]: run r1 not found"


def test_plain_status_without_details_still_maps_by_code() -> None:
    converted = from_grpc_error(_FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    assert isinstance(converted, exceptions.UnavailableError)
    assert converted.reason is None
    assert converted.message == "connection refused"


def test_details_that_do_not_parse_leave_the_error_its_code() -> None:
    """A status trailer or an ErrorInfo detail of bytes that do not parse (a proxy's, a
    broken server's) raised protobuf's DecodeError in place of the call's error."""
    garbled_info = any_pb2.Any(
        type_url="type.googleapis.com/google.rpc.ErrorInfo", value=b"\xff\xff\xff"
    )
    bad = any_pb2.Any()
    bad.Pack(error_details_pb2.BadRequest(field_violations=[{"field": "name"}]))
    status = status_pb2.Status(code=5, message="gone", details=[garbled_info, bad])
    for trailer in (b"\xff\xfe not a status", status.SerializeToString()):
        error = _FakeRpcError(
            grpc.StatusCode.NOT_FOUND, "gone", (("grpc-status-details-bin", trailer),)
        )
        converted = from_grpc_error(error)
        assert isinstance(converted, NotFoundError)
        assert (converted.message, converted.reason) == ("gone", None)
    assert converted.field_violations == [("name", "")]
