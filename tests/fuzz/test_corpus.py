"""The regression corpus (corpus.py): each hostile request gets exactly its answer, and
an undecodable one goes through the interceptor like any call (one log line, its
request id, no traceback)."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
import structlog
from google.protobuf.message import Message

from cairn.auth.v1 import auth_pb2, auth_service_pb2
from cairn.tracking.v1 import tracking_service_pb2

from ._property import CALL_TIMEOUT, exceptions_logged, failure
from ._rpc import Outcome, call, rpc_named
from .conftest import Target
from .corpus import CASES, INVALID_UTF8_GET_RUN, Case, upload_then_megabytes

SAME_TIME = 8


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_a_hostile_request_gets_its_answer(case: Case, corpus: Target) -> None:
    with structlog.testing.capture_logs() as logged:
        outcome = await call(
            corpus.channel,
            rpc_named(case.rpc),
            case.request(corpus.seeder),
            corpus.seeder.metadata,
            timeout=CALL_TIMEOUT,
        )
    broken = failure(outcome, exceptions_logged(logged))
    assert broken is None, f"{outcome.code.name}: {broken}"
    if case.code is not None:
        got = (outcome.code, outcome.reason if case.reason else None)
        assert got == (case.code, case.reason), outcome.message


async def test_an_undecodable_request_is_one_call_like_any_other(
    corpus: Target, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13: it answered UNKNOWN past the interceptor, wrote no request id, and
    printed a traceback per request before any authentication."""
    get_run = rpc_named("TrackingService.GetRun")
    missing = tracking_service_pb2.GetRunRequest(project=corpus.seeder.project, run_id="0" * 32)
    ids = {"normal": "corpus-normal-1", "malformed": "corpus-malformed-1"}
    with caplog.at_level(logging.WARNING), structlog.testing.capture_logs() as logged:
        normal = await call(
            corpus.channel,
            get_run,
            missing.SerializeToString(),
            (*corpus.seeder.metadata, ("x-request-id", ids["normal"])),
        )
        malformed = await call(
            corpus.channel,
            get_run,
            INVALID_UTF8_GET_RUN,
            (*corpus.seeder.metadata, ("x-request-id", ids["malformed"])),
        )
    assert (normal.code, normal.reason) == (grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
    assert (malformed.code, malformed.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_MESSAGE",
    )
    for request_id in ids.values():
        lines = [e for e in logged if e.get("request_id") == request_id]
        assert [e["event"] for e in lines] == ["rpc"], lines
        assert lines[0]["method"] == get_run.path
        assert "exc_info" not in lines[0]
    line = next(e for e in logged if e.get("request_id") == ids["malformed"])
    assert (line["code"], line["reason"]) == ("INVALID_ARGUMENT", "MALFORMED_MESSAGE")
    # The answer carries the request id wherever the answer of a decodable call does.
    assert _carrying(malformed, ids["malformed"]) == _carrying(normal, ids["normal"])
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def _carrying(outcome: Outcome, request_id: str) -> set[str]:
    """The response headers and trailers whose value is the request id."""
    return {key for key, value in (*outcome.initial, *outcome.trailing) if value == request_id}


async def test_updates_of_one_run_at_the_same_time_never_fail_inside(corpus: Target) -> None:
    """Found by the fuzzer: concurrent UpdateRun of one run deadlocked in PostgreSQL
    (each holds the run FOR SHARE, then updates it) and answered INTERNAL."""
    run_id = corpus.seeder.ids["run_id"][0]
    requests = [
        tracking_service_pb2.UpdateRunRequest(
            project=corpus.seeder.project, run_id=run_id, run_name=f"renamed-{i}"
        )
        for i in range(SAME_TIME)
    ]
    causes = await _at_once(corpus, "TrackingService.UpdateRun", requests)
    assert causes == ["OK"] * SAME_TIME


async def test_one_key_request_sent_many_times_at_once_never_fails_inside(
    corpus: Target,
) -> None:
    """Found by the fuzzer: CreateApiKey repeated with one x-cairn-request-id at the
    same time broke the unique index of the request ids (INTERNAL)."""
    request = auth_service_pb2.CreateApiKeyRequest(
        name="same-time",
        expiration=auth_pb2.API_KEY_EXPIRATION_30_DAYS,
        user_id=f"{corpus.seeder.project}-viewer",
    )
    headers = (("x-cairn-request-id", "corpus-same-time"),)
    causes = await _at_once(corpus, "AuthService.CreateApiKey", [request] * SAME_TIME, headers)
    assert [c for c in causes if ":" in c] == []


REFUSED_UPLOADS = {
    # who calls, the path, the answer
    "nul-in-path": ("admin", "a\x00.bin", "INVALID_ARGUMENT INVALID_STRING"),
    "forged-key": ("forged", "corpus/forged.bin", "UNAUTHENTICATED API_KEY_INVALID"),
    "viewer": ("viewer", "corpus/viewer.bin", "PERMISSION_DENIED PERMISSION_DENIED"),
}


@pytest.mark.parametrize("refused", list(REFUSED_UPLOADS))
async def test_an_upload_refused_mid_stream_gets_its_refusal(refused: str, corpus: Target) -> None:
    """The refusal must reach the client however far its chunks got (tried ten times:
    the failure depended on timing)."""
    who, path, answer = REFUSED_UPLOADS[refused]
    key = {"admin": corpus.keys.admin, "viewer": corpus.keys.viewer}.get(who, "cairn_x_y")
    causes = []
    for _ in range(10):
        with structlog.testing.capture_logs() as logged:
            outcome = await call(
                corpus.channel,
                rpc_named("ArtifactService.Upload"),
                upload_then_megabytes(corpus.seeder, path),
                (("authorization", f"Bearer {key}"),),
                timeout=CALL_TIMEOUT,
            )
        why = failure(outcome, exceptions_logged(logged))
        causes.append(f"{outcome.code.name} {outcome.reason}" + (f": {why}" if why else ""))
    assert causes == [answer] * 10


async def _at_once(
    target: Target,
    rpc: str,
    requests: list[Message],
    headers: tuple[tuple[str, str], ...] = (),
) -> list[str]:
    """Sends the requests at the same time; for each, its status code, followed by
    ": why" where the answer breaks the fuzz property."""
    with structlog.testing.capture_logs() as logged:
        outcomes = await asyncio.gather(
            *(
                call(
                    target.channel,
                    rpc_named(rpc),
                    request.SerializeToString(),
                    (*target.seeder.metadata, *headers),
                    timeout=CALL_TIMEOUT,
                )
                for request in requests
            )
        )
    exceptions = exceptions_logged(logged)
    return [
        o.code.name + ("" if (why := failure(o, exceptions)) is None else f": {why}")
        for o in outcomes
    ]
