"""Helpers for the registry, as in Kubeflow Model Registry's `model_registry.utils`."""

from __future__ import annotations

import os

from .exceptions import CairnError


class MissingMetadata(CairnError, ValueError):
    """Not enough information to build what was asked for."""


def s3_uri_from(
    path: str,
    bucket: str | None = None,
    *,
    endpoint: str | None = None,
    region: str | None = None,
) -> str:
    """An S3 URI for a storage path, with the endpoint and region as query parameters.

    Without a bucket, AWS_S3_BUCKET is used; a bucket other than that one needs its
    endpoint too. Endpoint and region default to AWS_S3_ENDPOINT and AWS_DEFAULT_REGION.

    Raises:
        MissingMetadata: when the bucket, endpoint or region cannot be found.
    """
    default_bucket = os.environ.get("AWS_S3_BUCKET")
    if not bucket:
        if not default_bucket:
            raise MissingMetadata("no bucket given and AWS_S3_BUCKET is not set")
        bucket = default_bucket
    elif bucket != default_bucket and not endpoint:
        raise MissingMetadata("a bucket other than AWS_S3_BUCKET needs its endpoint and region")
    endpoint = endpoint or os.environ.get("AWS_S3_ENDPOINT")
    region = region or os.environ.get("AWS_DEFAULT_REGION")
    if not (endpoint and region):
        raise MissingMetadata(
            "the endpoint and region are needed (or AWS_S3_ENDPOINT and AWS_DEFAULT_REGION)"
        )
    return f"s3://{bucket}/{path}?endpoint={endpoint}&defaultRegion={region}"
