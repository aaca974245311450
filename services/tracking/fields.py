"""The fields of tracking requests, read: validated, named as their request holds them
(`tags[3].value`) when refused, and turned into the model's types."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import grpc

from cairn.tracking.v1 import tracking_pb2 as pb
from cairn.tracking.v1 import tracking_service_pb2 as api

from ..common import idempotency
from ..common import validation as common
from ..common.errors import NotFound, invalid_field
from . import validation
from .model import PARENT_RUN_TAG, RUN_NAME_TAG, USER_TAG, RunInput, RunStatus, ViewType
from .store.runs import now_ms


def batch_id(request: api.LogBatchRequest, context: grpc.aio.ServicerContext) -> str:
    """The batch's own request id (journals replay it), else the call's, as other
    writes have; "" for none."""
    if request.request_id:
        return validation.request_id(request.request_id)
    header = idempotency.request_id_of(context) or ""
    return validation.request_id(header, idempotency.REQUEST_ID_HEADER) if header else ""


def tagged_name(tags: dict[str, str], field: str) -> str:
    """The run name that tags give as MLflow's mlflow.runName (the request's field
    holding it), taken out of them: the name is kept as the run's name alone ("" when
    they give none). An empty tag gives none, as in MLflow's store: it changes no name,
    and a run made with it gets one."""
    if RUN_NAME_TAG not in tags:
        return ""
    return validation.run_name(tags.pop(RUN_NAME_TAG), field)


def tagged_user(tags: dict[str, str], field: str) -> str:
    """The user MLflow's mlflow.user tag names (the request's field holding it), for a
    run created without a user_id: MLflow's client takes the run's user from it. The
    tag stays a tag too."""
    return common.text(tags.get(USER_TAG, ""), field, 256)


def value_of(tags: Sequence[pb.Tag], field: str, key: str) -> str:
    """The request's field holding the value of key's tag kept (the last given, `tags`):
    "tags[3].value"; "" when none is given."""
    given = [i for i, tag in enumerate(tags) if tag.key == key]
    return f"{field}[{given[-1]}].value" if given else ""


def with_parent(tags: dict[str, str], parent: str) -> dict[str, str]:
    """tags with MLflow's tag of a run's parent naming parent (a run id, lowercase)."""
    tagged = tags.get(PARENT_RUN_TAG)
    if tagged is not None and tagged.lower() != parent:
        raise invalid_field(
            "parent_run_id",
            f"is not the tag {PARENT_RUN_TAG} ({tagged!r}): give one, or both alike",
        )
    return {**tags, PARENT_RUN_TAG: parent}


def tags(given: list[pb.Tag], field: str) -> dict[str, str]:
    """Validated tags; a key given twice keeps its last value, as repeated SetTag would."""
    return dict(tag(one, f"{field}[{i}]") for i, one in enumerate(given))


def tag(given: pb.Tag, field: str) -> tuple[str, str]:
    """One validated tag, its fields named as within field ("tag", "tags[2]")."""
    return validation.key(given.key, f"{field}.key"), validation.tag_value(
        given.value, f"{field}.value"
    )


def params(given: list[pb.Param], field: str) -> dict[str, str]:
    """Validated params; the same key twice with different values is refused."""
    found: dict[str, str] = {}
    for i, one in enumerate(given):
        key, value = param(one, f"{field}[{i}]")
        if found.get(key, value) != value:
            raise invalid_field(f"{field}[{i}]", f"param {key!r} given twice with different values")
        found[key] = value
    return found


def param(given: pb.Param, field: str) -> tuple[str, str]:
    """One validated param, its fields named as within field ("param", "params[2]")."""
    return validation.key(given.key, f"{field}.key"), validation.param_value(
        given.value, f"{field}.value"
    )


def searched_experiments(values: Sequence[str]) -> list[int]:
    """The ids a search names. One past the largest id names no experiment: it matches no
    run, as an unknown id does, rather than failing the search."""
    ids = []
    for i, value in enumerate(values):
        with contextlib.suppress(NotFound):
            ids.append(validation.experiment_id(value, f"experiment_ids[{i}]"))
    return ids


def run_input(item: pb.RunInput, field: str) -> RunInput:
    run_input = RunInput(
        kind=validation.key(item.kind, f"{field}.kind"),
        name=common.text(item.name, f"{field}.name", validation.MAX_NAME_LENGTH),
        uri=_required_uri(item.uri, f"{field}.uri"),
        digest=common.text(item.digest, f"{field}.digest", 256),
        context=common.text(item.context, f"{field}.context", validation.MAX_KEY_LENGTH),
    )
    # Kind, uri and context make the inputs' primary key, whose entries PostgreSQL caps
    # at 2,704 bytes: each is held to its length in UTF-8 bytes as well as characters.
    for name, most in _KEYED_INPUT_BYTES.items():
        if len(getattr(run_input, name).encode()) > most:
            raise invalid_field(f"{field}.{name}", f"at most {most} bytes in UTF-8")
    return run_input


_KEYED_INPUT_BYTES = {
    "kind": validation.MAX_KEY_LENGTH,
    "uri": validation.MAX_URI_LENGTH,
    "context": validation.MAX_KEY_LENGTH,
}


def _required_uri(value: str, field: str) -> str:
    if not value:
        raise invalid_field(field, "must not be empty")
    return validation.uri(value, field)


def timestamp_ms(metric: pb.Metric) -> int:
    """The point's time: the caller's, else now (a client leaves it out so that a repeat
    of its request, under the same request id, is the same request)."""
    return metric.timestamp_ms if metric.HasField("timestamp_ms") else now_ms()


def end_time_ms(request: api.UpdateRunRequest) -> int | None:
    """The run's new end: None leaves it as it is (update_run changes a status alone,
    as MLflow's does), 0 is now."""
    if not request.HasField("end_time_ms"):
        return None
    return validation.run_time(request.end_time_ms, "end_time_ms")


def status(value: int) -> RunStatus | None:
    if value == pb.RUN_STATUS_UNSPECIFIED:
        return None
    if value not in RunStatus._value2member_map_:
        raise invalid_field("status", f"unknown run status {value}")
    return RunStatus(value)


def view_type(value: int) -> ViewType:
    if value == pb.VIEW_TYPE_UNSPECIFIED:
        return ViewType.ACTIVE_ONLY
    if value not in ViewType._value2member_map_:
        raise invalid_field("view_type", f"unknown view type {value}")
    return ViewType(value)


def max_points(value: int) -> int:
    if value < 0 or 0 < value < 4:
        raise invalid_field("max_points", "must be 0 (every point) or at least 4")
    return value
