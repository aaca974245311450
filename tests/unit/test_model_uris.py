"""The URIs of models and artifacts parse exactly, and bad ones say what is accepted."""

import pytest

from cairn.exceptions import InvalidArgumentError
from cairn.models import ArtifactUri, ModelUri, RunUri, is_uri, parse_uri
from cairn.types import ModelVersionStage


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("models:/churn/3", ModelUri("churn", version=3)),
        ("models:/churn/0012", ModelUri("churn", version=12)),
        ("models:/churn@champion", ModelUri("churn", alias="champion")),
        ("models:/churn@v-2.a_b", ModelUri("churn", alias="v-2.a_b")),
        ("models:/churn/Production", ModelUri("churn", stage=ModelVersionStage.PRODUCTION)),
        ("models:/churn/staging", ModelUri("churn", stage=ModelVersionStage.STAGING)),
        ("models:/churn/ARCHIVED", ModelUri("churn", stage=ModelVersionStage.ARCHIVED)),
        ("models:/churn/None", ModelUri("churn", stage=ModelVersionStage.NONE)),
        ("models:/churn/latest", ModelUri("churn", latest=True)),
        # Names may hold "/" and "@": the last separator decides.
        ("models:/team/churn/2", ModelUri("team/churn", version=2)),
        ("models:/a@b/1", ModelUri("a@b", version=1)),
        ("models:/a@b@gold", ModelUri("a@b", alias="gold")),
        ("models:/my model/1", ModelUri("my model", version=1)),
        ("MODELS:/churn/1", ModelUri("churn", version=1)),
        ("runs:/0123abcd/model", RunUri("0123abcd", "model")),
        ("runs:/0123abcd/model/sub/", RunUri("0123abcd", "model/sub")),
        ("runs:/0123abcd", RunUri("0123abcd", "")),
        ("runs:/0123abcd/", RunUri("0123abcd", "")),
        ("runs:/0123abcd//", RunUri("0123abcd", "")),
        ("models:/a/.b/..c/1", ModelUri("a/.b/..c", version=1)),
        (
            "cairn-artifacts://default/experiments/1/r/model",
            ArtifactUri("default", "experiments/1/r/model"),
        ),
        ("cairn-artifacts://p", ArtifactUri("p", "")),
    ],
)
def test_accepted_forms(uri: str, parsed: object) -> None:
    assert parse_uri(uri) == parsed


@pytest.mark.parametrize(
    "uri",
    [
        "models:/churn",  # no version, stage or alias
        "models:/churn/",
        "models:/churn/Prod",  # not a stage
        "models:/churn/-1",
        "models:/churn/\uff11",  # a digit, but not an ASCII one
        "models:/churn/9223372036854775808",  # past the largest version number, an int64
        "models:/churn/" + "9" * 5000,  # more digits than int() reads
        "models:/churn@",
        "models:/@champion",
        "models:/",
        "models://profile/churn/1",  # MLflow's other-server form
        "models:churn/1",
        # A name with an empty, "." or ".." segment, which no model is created under:
        # they parsed, and load_model resolved them.
        "models:/x/../1",
        "models:/../1",
        "models:/./1",
        "models:/a//b/1",
        "models:/a//1",  # the name "a/"
        "models:/x/..@gold",
        "models:/a//b/latest",
        # Versions are numbered from 1: version 0 was looked up, MODEL_VERSION_NOT_FOUND.
        "models:/churn/0",
        "models:/churn/000",
        "runs:/",
        "runs://run/model",
        "runs:/r/../other-run/secret",
        "runs:/r/./model",
        "runs:/r/a//b",  # the artifact service's paths hold no empty segment either
        "runs:/r//x",
        "cairn-artifacts:/p/x",
        "cairn-artifacts:///x",
        "cairn-artifacts://p/a/../../q",
        "cairn-artifacts://p/a//b",
        "file:///srv/.cairn/artifacts/default/model.pkl",
        "s3://bucket/model",
        "churn/1",
        "",
    ],
)
def test_refused_forms_name_the_accepted_ones(uri: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        parse_uri(uri)
    assert "models:/<name>@<alias>" in raised.value.message
    assert raised.value.reason == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "uri",
    [
        "models:/churn/3",
        "models:/churn@champion",
        "models:/churn/Production",
        "models:/churn/latest",
        "runs:/abc/model",
        "runs:/abc",
        "cairn-artifacts://p/a/b",
    ],
)
def test_a_parsed_uri_prints_as_written(uri: str) -> None:
    assert str(parse_uri(uri)) == uri


def test_run_ids_are_not_uris() -> None:
    assert not is_uri("9f1c2e0a4b5d4c3e8f7a6b5c4d3e2f1a")
    assert is_uri("models:/churn/1")
    assert is_uri("s3://bucket/key")
