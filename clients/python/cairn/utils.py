"""Helpers for the registry, as in Kubeflow Model Registry's `model_registry.utils`."""

from __future__ import annotations

import os
from urllib.parse import urlencode

from ._argument_error import invalid_argument
from .exceptions import InvalidArgumentError


class MissingMetadata(InvalidArgumentError):
    """Not enough information to build what was asked for: Kubeflow's name, for its
    users' `except` clauses, of a bad argument as the client refuses any other (reason
    INVALID_ARGUMENT, the argument in `field_violations`; a ValueError too)."""

    def __init__(self, argument: str, problem: str | None = None) -> None:
        # Worded as every other argument the client refuses, by the one helper; raised
        # with a message alone, as Kubeflow's is, it names no argument.
        if problem is None:
            super().__init__(argument, reason="INVALID_ARGUMENT")
            return
        refused = invalid_argument(argument, problem)
        super().__init__(
            refused.message, reason=refused.reason, field_violations=refused.field_violations
        )


def s3_uri_from(
    path: str,
    bucket: str | None = None,
    *,
    endpoint: str | None = None,
    region: str | None = None,
) -> str:
    """An S3 URI for a storage path: `s3://<bucket>/<path>`, with the endpoint and the
    region as query parameters when they are known.

    As the Kubeflow seed writes it, `s3_uri_from("build/onnx/hal.onnx", "cool-bucket")`
    is `s3://cool-bucket/build/onnx/hal.onnx`: AWS's own endpoint and the region of the
    reader's configuration apply. Endpoint and region default to AWS_S3_ENDPOINT and
    AWS_DEFAULT_REGION when those are set; they are `endpoint=` and `defaultRegion=`
    in the URI.

    Args:
        path: the object's key within the bucket, written as it is (not
            percent-encoded, as in Kubeflow); a leading "/" is dropped.
        bucket: the bucket; AWS_S3_BUCKET when None.
        endpoint: the S3 endpoint URL (e.g. a MinIO server's).
        region: the bucket's region.

    Raises:
        MissingMetadata: an InvalidArgumentError naming `bucket`, when no bucket is
            given and AWS_S3_BUCKET is not set.
    """
    bucket = bucket or os.environ.get("AWS_S3_BUCKET")
    if not bucket:
        raise MissingMetadata("bucket", "none given, and AWS_S3_BUCKET is not set")
    query = {
        key: value
        for key, value in (
            ("endpoint", endpoint or os.environ.get("AWS_S3_ENDPOINT")),
            ("defaultRegion", region or os.environ.get("AWS_DEFAULT_REGION")),
        )
        if value
    }
    # The path as given, not percent-encoded, as Kubeflow's helper writes it; a leading
    # "/" is dropped, or the key would begin with an empty segment.
    uri = f"s3://{bucket}/{path.lstrip('/')}"
    return f"{uri}?{urlencode(query, safe=':/')}" if query else uri
