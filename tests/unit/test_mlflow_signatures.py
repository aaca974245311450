"""MLflow's `MlflowClient` (seed 002) against Cairn's MLflow-style clients: every method
Cairn offers under MLflow's name takes MLflow's positional parameters in MLflow's order,
with compatible defaults; Cairn may add keyword-only ones.

The seed is MLflow's source as its documentation renders it: the indentation is gone
and some definitions start with "[docs] ". Each `def` is therefore parsed on its own,
with `ast`, from its first line to the end of its signature.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

import cairn

SEED = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "002_f57aededf68b5aca.txt"

# MLflow's named defaults, by value (mlflow.store.tracking and mlflow.store.model_registry).
CONSTANTS = {
    "SEARCH_MAX_RESULTS_DEFAULT": 1000,
    "SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT": 100,
    "SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT": 10_000,
    "DEFAULT_AWAIT_MAX_SLEEP_SECONDS": 300,
    "ViewType.ACTIVE_ONLY": cairn.types.ViewType.ACTIVE_ONLY,
}

# MLflow's methods Cairn does not offer, and why.
NOT_OFFERED = {
    "tracking_uri": "Cairn clients are made for a server address, not a tracking URI",
    "delete_traces": "tracing (LLM spans) is not part of Cairn",
    "get_trace": "tracing is not part of Cairn",
    "search_traces": "tracing is not part of Cairn",
    "start_trace": "tracing is not part of Cairn",
    "end_trace": "tracing is not part of Cairn",
    "start_span": "tracing is not part of Cairn",
    "end_span": "tracing is not part of Cairn",
    "set_trace_tag": "tracing is not part of Cairn",
    "delete_trace_tag": "tracing is not part of Cairn",
}


def seed_methods() -> dict[str, ast.arguments]:
    """MlflowClient's public methods: the seed's definitions whose first parameter is
    self (the examples in docstrings define plain functions)."""
    lines = SEED.read_text().splitlines()
    found: dict[str, ast.arguments] = {}
    for i, line in enumerate(lines):
        first = line.removeprefix("[docs] ")
        if not first.startswith("def "):
            continue
        for end in range(i, min(i + 60, len(lines))):
            try:
                tree = ast.parse("\n".join([first, *lines[i + 1 : end + 1]]) + "\n pass")
            except SyntaxError:
                continue
            function = tree.body[0]
            assert isinstance(function, ast.FunctionDef)
            params = function.args.posonlyargs + function.args.args
            if params and params[0].arg == "self" and not function.name.startswith("_"):
                found[function.name] = function.args
            break
    return found


def positional(args: ast.arguments) -> list[tuple[str, Any]]:
    """(name, default) of each positional parameter after self; default is `inspect
    .Parameter.empty` when there is none."""
    params = (args.posonlyargs + args.args)[1:]
    defaults = [inspect.Parameter.empty] * (len(params) - len(args.defaults))
    defaults += [_value(d) for d in args.defaults]
    return [(p.arg, d) for p, d in zip(params, defaults, strict=True)]


def _value(node: ast.expr) -> Any:
    text = ast.unparse(node)
    if text in CONSTANTS:
        return CONSTANTS[text]
    return ast.literal_eval(node)


SEED_METHODS = seed_methods()
CLIENTS = (cairn.TrackingClient, cairn.ModelRegistryAPIClient)


def cairn_method(name: str) -> Any:
    for client in CLIENTS:
        if hasattr(client, name):
            return getattr(client, name)
    return None


def test_the_seed_is_read_whole() -> None:
    # MlflowClient has about 70 public methods; a parser that lost some would pass
    # every other test here vacuously.
    assert len(SEED_METHODS) > 60
    assert {"log_metric", "search_model_versions", "copy_model_version"} <= set(SEED_METHODS)


def test_every_method_is_offered_or_listed_with_a_reason() -> None:
    missing = {n for n in SEED_METHODS if cairn_method(n) is None} - set(NOT_OFFERED)
    assert not missing, f"offer these or list them in NOT_OFFERED with the reason: {missing}"
    assert not {n for n in NOT_OFFERED if cairn_method(n) is not None}, "offered after all"


@pytest.mark.parametrize("name", sorted(set(SEED_METHODS) - set(NOT_OFFERED)))
def test_positional_parameters_match_mlflow(name: str) -> None:
    theirs = positional(SEED_METHODS[name])
    parameters = list(inspect.signature(cairn_method(name)).parameters.values())[1:]
    ours = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert [p.name for p in ours] == [n for n, _ in theirs], name
    for param, (_, default) in zip(ours, theirs, strict=True):
        # Compatible: MLflow's default where MLflow has one; Cairn may give a default
        # where MLflow has none (the call MLflow's users write still works).
        if default is not inspect.Parameter.empty:
            assert param.default == default, f"{name}({param.name}=...)"
    extra = [p for p in parameters if p.kind in (p.VAR_POSITIONAL,)]
    assert not extra, f"{name} takes *args"
