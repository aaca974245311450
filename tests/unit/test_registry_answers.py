"""A registry answer's map fields (tags, aliases, custom properties) read in one order,
by key: protobuf keeps no order of a map's entries, and the CLI printed a model's
tags and aliases in another order at each run."""

from cairn.registry.v1 import registry_pb2 as pb
from cairn.types._registry import mlflow_model_version_from_proto, registered_model_from_proto

_KEYS = ["delta", "alpha", "生产", "gamma", "beta"]


def test_tags_aliases_and_properties_come_by_key() -> None:
    model = pb.RegisteredModel(state=pb.STATE_LIVE)
    version = pb.ModelVersion(state=pb.STATE_LIVE)
    for number, key in enumerate(_KEYS):
        model.tags[key] = "v"
        model.aliases[key] = number + 1
        model.custom_properties[key].int_value = number
        version.tags[key] = "v"
    read = registered_model_from_proto(model)
    assert list(read.tags) == list(read.aliases) == sorted(_KEYS)
    assert list(read.custom_properties or {}) == sorted(_KEYS)
    assert list(mlflow_model_version_from_proto(version).tags) == sorted(_KEYS)
