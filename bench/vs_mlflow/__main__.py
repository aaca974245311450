"""`make bench-vs-mlflow`: the workload of workload.py through MLflow 3.17.2's REST API and
through Cairn's async client, each on a fresh PostgreSQL cluster of its own (pgserver,
default settings), one system after the other, in one run; prints a Markdown table.

    python -m bench.vs_mlflow [--runs 500 --history 10000 --artifact-mib 32 --tree-files 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from ..harness import postgres, serve
from . import cairn_driver
from .mlflow_server import HERE, PYTHON, WORKERS, mlflow_server
from .report import checkout, machine, print_table
from .workload import BATCH, describe, tree_paths

NAGLE_CHECK_CALLS = 200


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.vs_mlflow", description=__doc__)
    parser.add_argument("--runs", type=int, default=5000, help="runs searched (5000)")
    parser.add_argument("--history", type=int, default=100_000, help="points read back")
    parser.add_argument("--artifact-mib", type=int, default=256, help="artifact size")
    parser.add_argument("--tree-files", type=int, default=1000, help="files in the tree (1000)")
    args = parser.parse_args()
    if args.history % BATCH or args.history <= 0:
        parser.error(f"--history is logged in batches of {BATCH:,}: give a multiple")
    if args.tree_files <= 0:
        parser.error("--tree-files must be at least 1")
    return args


def _drive_mlflow(url: str, workload: dict[str, Any]) -> dict[str, float]:
    done = subprocess.run(
        [str(PYTHON), str(HERE / "mlflow_driver.py")],
        input=json.dumps({**workload, "url": url}),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the MLflow driver failed:\n{done.stderr}")
    results: dict[str, float] = json.loads(done.stdout)
    return results


def _mlflow(workload: dict[str, Any], work: Path, *, nodelay: bool) -> dict[str, float]:
    """A fresh cluster and server for one configuration of MLflow."""
    artifacts = work / f"mlflow-artifacts-{'nodelay' if nodelay else 'default'}"
    artifacts.mkdir()
    with postgres() as database_url, mlflow_server(database_url, artifacts, nodelay=nodelay) as url:
        return _drive_mlflow(
            url, {**workload, "database_url": database_url, "store_dir": str(artifacts)}
        )


async def _server_version(database_url: str) -> str:
    connection = await asyncpg.connect(database_url)
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


def _cairn(workload: dict[str, Any], work: Path) -> tuple[dict[str, float], str, str]:
    """Results, PostgreSQL's version, and the code the server started from."""
    settings = {"data_dir": str(work / "cairn"), "artifact_root": str(work / "cairn-artifacts")}
    code = checkout()
    with postgres() as database_url, serve(database_url, "all", **settings) as server:
        version = asyncio.run(_server_version(database_url))
        results = asyncio.run(
            cairn_driver.run(
                server.port,
                {**workload, "database_url": database_url, "store_dir": settings["artifact_root"]},
            )
        )
    return results, version, code


def _artifact_file(path: Path, mib: int) -> None:
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1024**2))


def _tree(root: Path, w: dict[str, Any]) -> None:
    for path in tree_paths(w["tree_files"]):
        file = root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(os.urandom(w["tree_file_bytes"]))


def main() -> None:
    args = _arguments()
    workload = describe(args.runs, args.history, args.artifact_mib, args.tree_files)
    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="cairn-vs-mlflow-") as directory:
        work = Path(directory)
        _artifact_file(work / "artifact.bin", args.artifact_mib)
        _tree(work / "tree", workload)
        workload["work_dir"] = directory
        everything = ["ingest", "log_metric", "search", "history", "artifacts", "tree"]
        nagle_check = {**workload, "phases": ["log_metric"], "log_metric_calls": NAGLE_CHECK_CALLS}
        default = _mlflow(nagle_check, work, nodelay=False)
        mlflow = _mlflow({**workload, "phases": everything}, work, nodelay=True)
        cairn, version, code = _cairn({**workload, "phases": everything}, work)
    print_table(
        workload,
        mlflow,
        cairn,
        context={
            "started": started,
            "seconds": time.time() - started,
            "machine": machine(),
            "load": (load_before, os.getloadavg()),
            "postgres": version,
            "cairn": code,
            "workers": WORKERS,
            "default_log_metric_ms": default["log_metric_ms"],
        },
    )


if __name__ == "__main__":
    main()
