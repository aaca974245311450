"""The fixed regression corpus: hostile requests, each with the exact answer it must get.

The first cases are those of issue 13 (found by hand against 02f6193); the last ones
were found by this tier's fuzzer and only have to keep the fuzz property (no INTERNAL
or UNKNOWN). Each request is built against the seeded "corpus" project, so forged page
tokens start from a real token of the very same query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2, field_mask_pb2
from google.protobuf.message import Message

from cairn.artifacts.v1 import artifacts_pb2, artifacts_service_pb2
from cairn.registry.v1 import registry_pb2, registry_service_pb2
from cairn.tracking.v1 import tracking_service_pb2

from ._messages import length_delimited
from ._world import LIST_RPCS, Seeder

INVALID = grpc.StatusCode.INVALID_ARGUMENT
ANY_REASON = None
T, R, A = tracking_service_pb2, registry_service_pb2, artifacts_service_pb2


@dataclass(frozen=True)
class Case:
    """One request and its required answer.

    Attributes:
        id: the test id.
        rpc: "Service.Method".
        request: builds the bytes sent (one message, or a client stream) from what the
            seeded project holds.
        code: the status code it must get; None for the fuzz property only.
        reason: the ErrorInfo reason it must get; None for any.
    """

    id: str
    rpc: str
    request: Callable[[Seeder], bytes | tuple[bytes, ...]]
    code: grpc.StatusCode | None
    reason: str | None


def _rpc_name(path: str) -> str:
    service, method = path.strip("/").split("/")
    return f"{service.rsplit('.', 1)[-1]}.{method}"


def _forged(path: str, forge: Callable[[list[Any]], list[Any]]) -> Callable[[Seeder], bytes]:
    """The request that answered a real token, sent again with the token's key forged."""

    def build(seeder: Seeder) -> bytes:
        request = type(seeder.first_pages[path])()
        request.CopyFrom(seeder.first_pages[path])
        real = seeder.tokens[path]
        payload = real.payload()
        request.page_token = real.forged({**payload, "k": forge(payload["k"])})
        return request.SerializeToString()

    return build


def _forged_token_cases() -> list[Case]:
    forgeries: dict[str, Callable[[list[Any]], list[Any]]] = {
        # The example: a real token whose "k" became [1].
        "k-1": lambda key: [1],
        # The key's length kept, each value of another JSON type.
        "k-wrong-types": lambda key: [{"x": 1}] * len(key),
    }
    return [
        Case(
            f"forged-token-{name}-{_rpc_name(path)}",
            _rpc_name(path),
            _forged(path, forge),
            INVALID,
            "INVALID_PAGE_TOKEN",
        )
        for path in LIST_RPCS
        for name, forge in forgeries.items()
    ]


# Each search RPC with a term its filter language accepts, and one whose value has a NUL.
SEARCHES: dict[str, tuple[type[Message], str, str]] = {
    "TrackingService.SearchExperiments": (
        T.SearchExperimentsRequest,
        "name = 'x'",
        "name = 'a\x00b'",
    ),
    "TrackingService.SearchRuns": (T.SearchRunsRequest, "metrics.m1 > 0", "params.p = 'a\x00b'"),
    "RegistryService.ListRegisteredModels": (
        R.ListRegisteredModelsRequest,
        "name = 'x'",
        "name = 'a\x00b'",
    ),
    "RegistryService.ListModelVersions": (
        R.ListModelVersionsRequest,
        "name = 'x'",
        "name = 'a\x00b'",
    ),
    "RegistryService.ListArtifacts": (R.ListArtifactsRequest, "name = 'x'", "name = 'a\x00b'"),
}


def _search(rpc: str, text: str) -> Callable[[Seeder], bytes]:
    cls = SEARCHES[rpc][0]

    def build(seeder: Seeder) -> bytes:
        request = cls(project=seeder.project, filter=text)
        if "experiment_ids" in cls.DESCRIPTOR.fields_by_name:  # SearchRuns needs one
            request.experiment_ids.append(seeder.ids["experiment_id"][0])
        return request.SerializeToString()

    return build


def _filter_cases() -> list[Case]:
    cases = []
    for rpc, (_, term, nul) in SEARCHES.items():
        # 196 levels raised RecursionError in the parser (402 characters with its term).
        deep = "(" * 196 + term + ")" * 196
        cases += [
            Case(f"196-parentheses-{rpc}", rpc, _search(rpc, deep), INVALID, "FILTER_TOO_COMPLEX"),
            Case(f"nul-in-filter-value-{rpc}", rpc, _search(rpc, nul), INVALID, "INVALID_STRING"),
        ]
    # The 200 terms took PostgreSQL 106 s and 23 GiB; 300 must be refused.
    many = " AND ".join(["metrics.m1 > 0"] * 300)
    cases += [
        Case(
            "300-terms-SearchRuns",
            "TrackingService.SearchRuns",
            _search("TrackingService.SearchRuns", many),
            INVALID,
            "FILTER_TOO_COMPLEX",
        ),
        Case(
            "nul-in-filter-key-SearchRuns",
            "TrackingService.SearchRuns",
            _search("TrackingService.SearchRuns", "params.`a\x00b` = 'x'"),
            INVALID,
            "INVALID_STRING",
        ),
        Case(
            "tags-filter-on-ListArtifacts",
            "RegistryService.ListArtifacts",
            _search("RegistryService.ListArtifacts", "tags.team = 'x'"),
            INVALID,
            "INVALID_FILTER",
        ),
    ]
    return cases


def _alias_with_nul(seeder: Seeder) -> bytes:
    return R.FindModelVersionRequest(
        project=seeder.project,
        registered_model_id=seeder.ids["registered_model_id"][0],
        alias="champ\x00ion",
    ).SerializeToString()


def _upload(header: A.UploadHeader, content: bytes = b"content") -> tuple[bytes, ...]:
    return tuple(
        m.SerializeToString()
        for m in (
            A.UploadRequest(header=header),
            A.UploadRequest(chunk=content),
            A.UploadRequest(finish=A.UploadFinish()),
        )
    )


def _content_type_with_nul(seeder: Seeder) -> tuple[bytes, ...]:
    return _upload(
        A.UploadHeader(project=seeder.project, path="corpus/nul.txt", content_type="text/\x00plain")
    )


def _presign_forever(seeder: Seeder) -> bytes:
    return A.CreatePresignedUrlRequest(
        project=seeder.project,
        path="data/a.txt",
        method=artifacts_pb2.PRESIGN_METHOD_GET,
        expires_in=duration_pb2.Duration(seconds=2**63 - 1),
    ).SerializeToString()


# GetRun's field 1 (project), two bytes long, holding "\xc3(": not UTF-8.
INVALID_UTF8_GET_RUN = bytes.fromhex("0a02c328")


def _over_the_size_limit(seeder: Seeder) -> bytes:
    # The issue sent 16 MiB messages; one over CAIRN_MAX_MESSAGE_BYTES (an unknown
    # field of 17 MiB) is refused by gRPC itself, before any handler.
    request = T.GetRunRequest(project=seeder.project, run_id="0" * 32)
    return request.SerializeToString() + length_delimited(15, b"x" * (17 << 20))


def _field_cases() -> list[Case]:
    return [
        Case(
            "nul-in-alias-FindModelVersion",
            "RegistryService.FindModelVersion",
            _alias_with_nul,
            INVALID,
            "INVALID_STRING",
        ),
        Case(
            "nul-in-content-type-Upload",
            "ArtifactService.Upload",
            _content_type_with_nul,
            INVALID,
            "INVALID_STRING",
        ),
        Case(
            "expires-in-int64-max-CreatePresignedUrl",
            "ArtifactService.CreatePresignedUrl",
            _presign_forever,
            INVALID,
            ANY_REASON,
        ),
        Case(
            "over-16-MiB-GetRun",
            "TrackingService.GetRun",
            _over_the_size_limit,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            ANY_REASON,
        ),
        Case(
            "invalid-utf8-GetRun",
            "TrackingService.GetRun",
            lambda seeder: INVALID_UTF8_GET_RUN,
            INVALID,
            "MALFORMED_MESSAGE",
        ),
    ]


# --- Found by the fuzzer -------------------------------------------------------------


def _huge_expected_size(seeder: Seeder) -> tuple[bytes, ...]:
    # minio's put_object raised ValueError ("part size ... is not supported").
    return _upload(
        A.UploadHeader(project=seeder.project, path="corpus/huge.bin", expected_size=66992445757720)
    )


def _artifact_state_out_of_range(seeder: Seeder) -> bytes:
    # asyncpg: "invalid input for query argument: value out of int16 range".
    return R.CreateArtifactRequest(
        artifact=registry_pb2.Artifact(
            project=seeder.project,
            name="corpus-state",
            uri="s3://bucket/x",
            state=100000,  # type: ignore[arg-type]
            model=registry_pb2.ModelArtifactDetails(),
        )
    ).SerializeToString()


def upload_then_megabytes(seeder: Seeder, path: str) -> tuple[bytes, ...]:
    """An upload of 12 MiB. Found by the fuzzer: when the call is refused before the
    servicer reads the header (the caller's key or role, a NUL in the header) while the
    client still streams its chunks, the client saw INTERNAL "Internal error from Core"
    instead of the refusal, about one time in three."""
    header = A.UploadRequest(header=A.UploadHeader(project=seeder.project, path=path))
    chunk = A.UploadRequest(chunk=b"x" * (1 << 20))
    finish = A.UploadRequest(finish=A.UploadFinish())
    return tuple(m.SerializeToString() for m in (header, *[chunk] * 12, finish))


def _long_update_mask(seeder: Seeder) -> bytes:
    # The refusal repeats the unknown path, so its trailers passed gRPC's 16 KiB limit:
    # the client got RESOURCE_EXHAUSTED "received metadata size exceeds hard limit".
    return R.UpdateRegisteredModelRequest(
        registered_model=registry_pb2.RegisteredModel(
            project=seeder.project, id=seeder.ids["registered_model_id"][0]
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["é" * 3000, "a" * 4096]),
    ).SerializeToString()


def _fuzz_found_cases() -> list[Case]:
    return [
        Case(
            "fuzz-long-update-mask-UpdateRegisteredModel",
            "RegistryService.UpdateRegisteredModel",
            _long_update_mask,
            INVALID,
            ANY_REASON,
        ),
        Case(
            "fuzz-huge-expected-size-Upload",
            "ArtifactService.Upload",
            _huge_expected_size,
            None,
            None,
        ),
        Case(
            "fuzz-unknown-state-CreateArtifact",
            "RegistryService.CreateArtifact",
            _artifact_state_out_of_range,
            None,
            None,
        ),
    ]


CASES = _forged_token_cases() + _filter_cases() + _field_cases() + _fuzz_found_cases()
