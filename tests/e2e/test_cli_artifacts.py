"""`cairn artifacts` and `cairn models`, the real executable against a served instance:
files go up and come back byte for byte, listings parsed as JSON."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest

import cairn
from tests.e2e.cli_helpers import as_json, environment, failed, ok, run_cairn
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(served: ServerProcess, tmp_path: Path) -> dict[str, str]:
    return environment(tmp_path, CAIRN_ADDRESS=served.address)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "outputs"
    (root / "plots").mkdir(parents=True)
    (root / "report.txt").write_text("accuracy 0.9\n")
    (root / "plots" / "loss.csv").write_text("step,loss\n0,1.0\n1,0.5\n")
    return root


async def create_run(address: str, experiment_id: str) -> str:
    async with cairn.Client(f"http://{address}") as client:
        return (await client.tracking.create_run(experiment_id)).info.run_id


async def test_run_artifacts_upload_list_download_rm(
    served: ServerProcess, env: dict[str, str], tree: Path, tmp_path: Path, unique: str
) -> None:
    experiment_id = ok("experiments", "create", f"art-{unique}", env=env).strip()
    run_id = await create_run(served.address, experiment_id)

    uploaded = as_json("artifacts", "upload", str(tree), "-r", run_id, "-a", "out", env=env)
    assert sorted(u["path"] for u in uploaded) == ["out/plots/loss.csv", "out/report.txt"]
    single = as_json("artifacts", "upload", str(tree / "report.txt"), "-r", run_id, env=env)
    assert [(u["path"], u["size"]) for u in single] == [("report.txt", 13)]

    top = as_json("artifacts", "list", "-r", run_id, env=env)
    assert [(e["path"], e["is_dir"]) for e in top] == [("out/", True), ("report.txt", False)]
    below = as_json("artifacts", "list", "out", "-r", run_id, "--recursive", env=env)
    assert [e["path"] for e in below] == ["out/plots/loss.csv", "out/report.txt"]
    assert "report.txt" in ok("artifacts", "list", "-r", run_id, env=env)

    target = tmp_path / "back"
    written = ok("artifacts", "download", "-r", run_id, "-a", "out", "-d", str(target), env=env)
    assert Path(written.strip()) == target / "out"
    assert (target / "out" / "plots" / "loss.csv").read_text() == "step,loss\n0,1.0\n1,0.5\n"
    by_uri = tmp_path / "by-uri"
    uri = f"runs:/{run_id}/out/report.txt"
    ok("artifacts", "download", "-u", uri, "-d", str(by_uri), env=env)
    assert (by_uri / "report.txt").read_text() == "accuracy 0.9\n"

    assert ok("artifacts", "rm", "out", "-r", run_id, "--recursive", env=env) == (
        "deleted 2 objects\n"
    )
    assert [e["path"] for e in as_json("artifacts", "list", "-r", run_id, env=env)] == [
        "report.txt"
    ]
    line = failed("artifacts", "download", "-r", run_id, "-a", "out", "-d", str(target), env=env)
    # Named as typed: the store's path of the run's root is not the user's.
    assert line.endswith(f"[OBJECT_NOT_FOUND]: run {run_id} has no artifact at 'out'")


async def test_a_runs_path_is_read_alike_by_every_command(
    served: ServerProcess, env: dict[str, str], tree: Path, tmp_path: Path, unique: str
) -> None:
    """download read `./out` and `/out` as MLflow's store does, `out`; list refused
    them INVALID_PATH naming its field `prefix`, and rm naming `path`."""
    experiment_id = ok("experiments", "create", f"paths-{unique}", env=env).strip()
    run_id = await create_run(served.address, experiment_id)
    ok("artifacts", "upload", str(tree), "-r", run_id, "-a", "out", env=env)
    listed = as_json("artifacts", "list", "out", "-r", run_id, env=env)

    assert as_json("artifacts", "list", "./out", "-r", run_id, env=env) == listed
    assert as_json("artifacts", "list", "/out/", "-r", run_id, env=env) == listed
    written = ok("artifacts", "download", "-r", run_id, "-a", "./out", "-d", str(tmp_path), env=env)
    assert Path(written.strip()) == tmp_path / "out"
    assert ok("artifacts", "rm", "./out/report.txt", "-r", run_id, env=env) == (
        "deleted 1 object\n"
    )


async def test_rm_of_a_path_the_run_lacks_names_it_as_typed(
    served: ServerProcess, env: dict[str, str], unique: str
) -> None:
    """rm named the store's path of it: no object at 'experiments/<id>/<run>/artifacts/out',
    where download says what the user typed."""
    experiment_id = ok("experiments", "create", f"rm-{unique}", env=env).strip()
    run_id = await create_run(served.address, experiment_id)
    line = failed("artifacts", "rm", "out/", "-r", run_id, env=env)
    assert line.endswith(f"[OBJECT_NOT_FOUND]: run {run_id} has no artifact at 'out'"), line
    # --recursive over nothing said "deleted 0 objects", status 0, for a typo.
    line = failed("artifacts", "rm", "out/", "-r", run_id, "--recursive", env=env)
    assert line.endswith(f"[OBJECT_NOT_FOUND]: run {run_id} has no artifact at 'out'"), line
    line = failed("artifacts", "rm", "", "-r", run_id, "--recursive", env=env)
    assert line.endswith(f"[OBJECT_NOT_FOUND]: run {run_id} has no artifacts"), line
    # --force, as `rm -f`: nothing there deletes nothing, and is no error.
    for recursive in ([], ["--recursive"]):
        said = ok("artifacts", "rm", "out/", "-r", run_id, "--force", *recursive, env=env)
        assert said.strip() == "deleted 0 objects"


def test_store_paths_upload_list_download_rm(
    env: dict[str, str], tree: Path, tmp_path: Path, unique: str
) -> None:
    base = f"cli/{unique}"
    one = as_json("artifacts", "upload", str(tree / "report.txt"), "-a", f"{base}/r.txt", env=env)
    assert [u["path"] for u in one] == [f"{base}/r.txt"]
    ok("artifacts", "upload", str(tree), "-a", f"{base}/tree", env=env)
    listed = as_json("artifacts", "list", base, "--recursive", env=env)
    assert [e["path"] for e in listed] == [
        f"{base}/r.txt",
        f"{base}/tree/plots/loss.csv",
        f"{base}/tree/report.txt",
    ]
    line = failed("artifacts", "upload", str(tree / "report.txt"), "-a", f"{base}/r.txt", env=env)
    assert line.startswith("Error: ALREADY_EXISTS [OBJECT_ALREADY_EXISTS]")
    ok(
        "artifacts",
        "upload",
        str(tree / "report.txt"),
        "-a",
        f"{base}/r.txt",
        "--overwrite",
        env=env,
    )

    ok("artifacts", "download", "-a", f"{base}/r.txt", "-d", str(tmp_path / "got"), env=env)
    assert (tmp_path / "got" / "r.txt").read_text() == "accuracy 0.9\n"
    # A directory keeps its name, as by -u and -r: its files went straight into -d (the
    # current directory by default), over any there of the same names.
    written = ok(
        "artifacts", "download", "-a", f"{base}/tree", "-d", str(tmp_path / "got"), env=env
    )
    assert written == f"{tmp_path / 'got' / 'tree'}\n"
    assert (tmp_path / "got" / "tree" / "plots" / "loss.csv").read_text().startswith("step")
    assert sorted(p.name for p in (tmp_path / "got").iterdir()) == ["r.txt", "tree"]
    assert ok("artifacts", "rm", f"{base}/r.txt", "-f", env=env) == "deleted 1 object\n"
    assert f"{base}/r.txt" not in {
        e["path"] for e in as_json("artifacts", "list", base, "--recursive", env=env)
    }
    # A directory without --recursive was "no object at ..."; a bare "" deleted nothing.
    directory = run_cairn("artifacts", "rm", base, env=env)
    assert directory.returncode == 2 and "add --recursive" in directory.stderr
    nothing = run_cairn("artifacts", "rm", "", "--recursive", env=env)
    assert nothing.returncode == 2 and "name what to delete" in nothing.stderr
    line = failed("artifacts", "rm", f"{base}/nothing", "--recursive", env=env)
    assert line.endswith(f"[OBJECT_NOT_FOUND]: no object at '{base}/nothing'"), line
    # --recursive over an object is the object, as `rm -r` of a file is.
    assert ok("artifacts", "rm", f"{base}/tree/report.txt", "--recursive", env=env) == (
        "deleted 1 object\n"
    )


def test_an_empty_directory_uploads_nothing_and_says_so(
    env: dict[str, str], tmp_path: Path, unique: str
) -> None:
    (tmp_path / "empty").mkdir()
    argv = ("artifacts", "upload", str(tmp_path / "empty"), "-a", f"cli/{unique}/empty")
    uploaded = run_cairn(*argv, "-o", "json", env=env)
    assert uploaded.returncode == 0 and json.loads(uploaded.stdout) == []
    assert uploaded.stderr == f"Nothing uploaded: {tmp_path / 'empty'} holds no files.\n"
    as_table = run_cairn(*argv, env=env)
    assert "Nothing uploaded" in as_table.stderr
    assert as_table.stdout == ""  # not an empty table besides


def test_download_needs_one_source(env: dict[str, str]) -> None:
    refused = run_cairn("artifacts", "download", env=env)
    assert refused.returncode == 2
    assert "give -r RUN" in refused.stderr


async def test_models_list_versions_alias_stage_download(
    served: ServerProcess, env: dict[str, str], tmp_path: Path, unique: str
) -> None:
    name = f"churn-{unique}"
    experiment_id = ok("experiments", "create", f"models-{unique}", env=env).strip()
    async with cairn.Client(f"http://{served.address}") as client:
        run_id = (await client.tracking.create_run(experiment_id)).info.run_id
        for weight in (1, 2):
            await client.tracking.log_model(
                run_id, {"w": weight}, f"model-{weight}", flavor="pickle",
                registered_model_name=name,
            )  # fmt: skip

    models = as_json("models", "list", "--filter", f"name = '{name}'", env=env)
    assert [m["name"] for m in models] == [name]
    assert name in ok("models", "list", env=env)
    versions = as_json("models", "versions", name, env=env)
    assert [(v["version"], v["source_run_id"]) for v in versions] == [(2, run_id), (1, run_id)]

    ok("models", "alias", name, "champion", "1", env=env)
    ok("models", "alias", name, "challenger", "2", env=env)
    ok("models", "alias", name, "challenger", "--delete", env=env)
    assert as_json("models", "describe", name, env=env)["aliases"] == {"champion": 1}
    staged = as_json("models", "stage", name, "2", "production", env=env)
    assert (staged["version"], staged["stage"]) == (2, "Production")

    for how, weight in ((["--alias", "champion"], 1), (["--stage", "Production"], 2)):
        target = tmp_path / how[0].strip("-")
        written = Path(ok("models", "download", name, *how, "-d", str(target), env=env).strip())
        assert pickle.loads((written / "model.pkl").read_bytes()) == {"w": weight}
    line = failed("models", "download", name, "--version", "9", "-d", str(tmp_path), env=env)
    assert "NOT_FOUND" in line
    assert "[REGISTERED_MODEL_NOT_FOUND]" in failed("models", "describe", f"no-{unique}", env=env)


async def test_models_versions_filters_within_its_model_as_written(
    served: ServerProcess, env: dict[str, str], unique: str
) -> None:
    """The command put the filter in parentheses after a condition on the name: an error
    was placed 24 characters past where the filter had it, and a ")" in the filter
    closed the parentheses and listed the versions of other models."""
    mine, other = f"mine-{unique}", f"other-{unique}"
    experiment_id = ok("experiments", "create", f"filters-{unique}", env=env).strip()
    async with cairn.Client(f"http://{served.address}") as client:
        run_id = (await client.tracking.create_run(experiment_id)).info.run_id
        for name in (mine, other):
            await client.tracking.log_model(
                run_id, {"w": 1}, name, flavor="pickle", registered_model_name=name
            )

    listed = as_json("models", "versions", mine, "--filter", "version_number = 1", env=env)
    assert [(v["name"], v["version"]) for v in listed] == [(mine, 1)]
    line = failed("models", "versions", mine, "--filter", "bad filter", env=env)
    assert "[INVALID_FILTER]: invalid filter at position 4:" in line
    escape = f"version_number = 1) OR (name = '{other}'"
    line = failed("models", "versions", mine, "--filter", escape, env=env)
    assert "[INVALID_FILTER]: invalid filter at position 18:" in line


async def test_models_describe_names_the_stage_of_each_latest_version(
    served: ServerProcess, env: dict[str, str], unique: str
) -> None:
    """describe showed latest_versions as bare numbers ("1, 2", JSON [1, 2]), with no
    stage, though its help promises the latest version in each stage."""
    name = f"staged-{unique}"
    experiment_id = ok("experiments", "create", f"staged-{unique}", env=env).strip()
    async with cairn.Client(f"http://{served.address}") as client:
        run_id = (await client.tracking.create_run(experiment_id)).info.run_id
        for weight in (1, 2, 3):
            await client.tracking.log_model(
                run_id, {"w": weight}, f"model-{weight}", flavor="pickle",
                registered_model_name=name,
            )  # fmt: skip
    ok("models", "stage", name, "2", "production", env=env)

    described = as_json("models", "describe", name, env=env)
    assert described["latest_versions"] == {"None": 3, "Production": 2}
    table = ok("models", "describe", name, env=env)
    assert re.search(r"│ latest_versions +│ None=3, Production=2 +│", table), table
