"""`cairn.utils.s3_uri_from`'s one failure is a bad argument, raised as every other one."""

from __future__ import annotations

import grpc
import pytest

from cairn.exceptions import InvalidArgumentError
from cairn.utils import MissingMetadata, s3_uri_from


def test_a_missing_bucket_is_an_invalid_argument_naming_bucket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It was a CairnError of code UNKNOWN and no reason, which docs/client.md says no
    error of the client is."""
    monkeypatch.delenv("AWS_S3_BUCKET", raising=False)
    with pytest.raises(MissingMetadata) as raised:
        s3_uri_from("a")
    error = raised.value
    assert isinstance(error, InvalidArgumentError) and isinstance(error, ValueError)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_ARGUMENT"
    assert [field for field, _ in error.field_violations] == ["bucket"]
    assert error.message.startswith("bucket: ")


def test_the_bucket_of_the_environment_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_S3_ENDPOINT", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_S3_BUCKET", "from-env")
    assert s3_uri_from("a") == "s3://from-env/a"


def test_missing_metadata_raised_with_a_message_alone_is_an_invalid_argument() -> None:
    """Kubeflow's code raises it with its message alone."""
    error = MissingMetadata("no model format given")
    assert isinstance(error, InvalidArgumentError)
    assert (error.reason, str(error.message)) == ("INVALID_ARGUMENT", "no model format given")
