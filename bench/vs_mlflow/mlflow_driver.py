"""The workload through MLflow's REST API, run by the MLflow environment's Python.

Usage: mlflow_driver.py < workload.json (with "url", "database_url", "work_dir" and
"phases" added); prints one JSON object of results. It must not import cairn: it runs
where only MLflow is installed. Every thread keeps one keep-alive requests.Session.
The tree goes through MLflow's own client instead (MlflowClient's log_artifacts and
download_artifacts), with whatever concurrency it brings.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import requests
from mlflow import MlflowClient
from workload import check_tree, evict, points, run_data

API = "/api/2.0/mlflow"
HISTORY_PAGE = 25_000  # the most MLflow's get-history returns at once; its client pages so
MIB = 1024**2


class Mlflow:
    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = self.session.post(f"{self.url}{API}/{endpoint}", json=body)
        reply.raise_for_status()
        return reply.json()

    def get(self, endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
        reply = self.session.get(f"{self.url}{API}/{endpoint}", params=params)
        reply.raise_for_status()
        return reply.json()

    def create_run(self, experiment_id: str, start_time: int) -> str:
        body = {"experiment_id": experiment_id, "start_time": start_time}
        return self.post("runs/create", body)["run"]["info"]["run_id"]

    def log_points(self, run_id: str, batch: list[tuple[str, float, int]]) -> None:
        now = int(time.time() * 1000)
        metrics = [{"key": k, "value": v, "timestamp": now, "step": s} for k, v, s in batch]
        self.post("runs/log-batch", {"run_id": run_id, "metrics": metrics})


def _kv(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in values.items()]


def ingest(ml: Mlflow, w: dict[str, Any], run_ids: list[str], batches: int) -> float:
    payloads = [points(w["seed"], n, w["batch"]) for n in range(batches)]

    def writer(run_id: str) -> None:
        for payload in payloads:
            ml.log_points(run_id, payload)

    start = time.perf_counter()
    with ThreadPoolExecutor(len(run_ids)) as pool:
        list(pool.map(writer, run_ids))
    return len(run_ids) * batches * w["batch"] / (time.perf_counter() - start)


def log_metric_ms(ml: Mlflow, run_id: str, calls: int) -> float:
    samples = []
    for step in range(calls):
        body = {"run_id": run_id, "key": "latency", "value": 1.0, "step": step}
        body["timestamp"] = int(time.time() * 1000)
        start = time.perf_counter()
        ml.post("runs/log-metric", body)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def populate(ml: Mlflow, w: dict[str, Any], experiment_id: str) -> float:
    """Runs per second, each created then given its first batch, by 8 writers."""

    def one(n: int) -> None:
        data = run_data(w["seed"], n)
        run_id = ml.create_run(experiment_id, data["start_time"])
        now = int(time.time() * 1000)
        metrics = [
            {"key": k, "value": v, "timestamp": now, "step": 0} for k, v in data["metrics"].items()
        ]
        body = {"run_id": run_id, "metrics": metrics}
        body |= {"params": _kv(data["params"]), "tags": _kv(data["tags"])}
        ml.post("runs/log-batch", body)

    start = time.perf_counter()
    with ThreadPoolExecutor(w["writers"]) as pool:
        list(pool.map(one, range(w["runs"])))
    return w["runs"] / (time.perf_counter() - start)


def analyze(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("ANALYZE")


def search(
    ml: Mlflow, experiment: str, shape: dict[str, Any], size: int, token: str = ""
) -> dict[str, Any]:
    body = {
        "experiment_ids": [experiment],
        "filter": shape["filter"],
        "order_by": shape["order_by"],
        "max_results": size,
    }
    if token:
        body["page_token"] = token
    return ml.post("runs/search", body)


def search_ms(ml: Mlflow, w: dict[str, Any], experiment_id: str, shape: dict[str, Any]) -> float:
    samples = []
    for _ in range(3 + w["search_calls"]):  # three to warm up
        start = time.perf_counter()
        page = search(ml, experiment_id, shape, w["page"])
        samples.append((time.perf_counter() - start) * 1000)
    if len(page.get("runs", [])) != min(w["page"], w["runs"]) and shape["filter"] == "":
        raise RuntimeError("unfiltered search returned a short page")
    return statistics.median(samples[3:])


def matches(ml: Mlflow, w: dict[str, Any], experiment_id: str, shape: dict[str, Any]) -> int:
    """How many runs a shape matches, read page by page (scan_page runs a page)."""
    seen, token = 0, ""
    while True:
        page = search(ml, experiment_id, shape, w["scan_page"], token)
        seen += len(page.get("runs", []))
        token = page.get("next_page_token", "")
        if not token:
            return seen


def scan_s(ml: Mlflow, w: dict[str, Any], experiment_id: str) -> float:
    samples = []
    for _ in range(w["scans"]):
        start = time.perf_counter()
        seen = matches(ml, w, experiment_id, {"filter": "", "order_by": []})
        samples.append(time.perf_counter() - start)
        if seen != w["runs"]:
            raise RuntimeError(f"the scan saw {seen} runs")
    return statistics.median(samples)


def history_s(ml: Mlflow, w: dict[str, Any], run_id: str) -> float:
    for n in range(w["history"] // w["batch"]):
        ml.log_points(run_id, points(w["seed"] + 1, n, w["batch"], key="h"))
    samples = []
    for _ in range(w["history_reads"]):
        seen, token = 0, ""
        start = time.perf_counter()
        while True:
            query = {"run_id": run_id, "metric_key": "h", "max_results": HISTORY_PAGE}
            if token:
                query["page_token"] = token
            page = ml.get("metrics/get-history", query)
            seen += len(page.get("metrics", []))
            token = page.get("next_page_token", "")
            if not token:
                break
        samples.append(time.perf_counter() - start)
        if seen != w["history"]:
            raise RuntimeError(f"the history held {seen} points")
    return statistics.median(samples)


def artifacts(ml: Mlflow, w: dict[str, Any]) -> tuple[float, float, float]:
    """MiB/s through the artifact proxy (mlflow-artifacts PUT and GET): up, down right
    after the upload, and down with the stored file on disk only."""
    source = os.path.join(w["work_dir"], "artifact.bin")
    target = os.path.join(w["work_dir"], "mlflow-download.bin")
    url = f"{ml.url}/api/2.0/mlflow-artifacts/artifacts/bench/big.bin"

    def download() -> float:
        start = time.perf_counter()
        with ml.session.get(url, stream=True) as reply, open(target, "wb") as out:
            reply.raise_for_status()
            for chunk in reply.iter_content(MIB):
                out.write(chunk)
        seconds = time.perf_counter() - start
        if os.path.getsize(target) != w["artifact_mib"] * MIB:
            raise RuntimeError("the download is not the upload's size")
        os.remove(target)
        return seconds

    ups, downs, from_disk = [], [], []
    for _ in range(w["artifact_repeats"]):
        start = time.perf_counter()
        with open(source, "rb") as body:
            ml.session.put(url, data=body).raise_for_status()
        ups.append(time.perf_counter() - start)
        downs.append(download())
        evict(w["store_dir"])
        from_disk.append(download())
    mib = w["artifact_mib"]
    return (
        mib / statistics.median(ups),
        mib / statistics.median(downs),
        mib / statistics.median(from_disk),
    )


def tree(ml: Mlflow, w: dict[str, Any], experiment_id: str) -> tuple[float, float]:
    """Files per second up and down: the tree logged to a fresh run each time, read back."""
    client = MlflowClient(tracking_uri=ml.url)
    source = os.path.join(w["work_dir"], "tree")
    ups, downs = [], []
    for repeat in range(w["tree_repeats"]):
        run_id = ml.create_run(experiment_id, 0)
        start = time.perf_counter()
        client.log_artifacts(run_id, source, "tree")
        ups.append(time.perf_counter() - start)
        target = os.path.join(w["work_dir"], f"mlflow-tree-{repeat}")
        os.mkdir(target)
        start = time.perf_counter()
        written = client.download_artifacts(run_id, "tree", target)
        downs.append(time.perf_counter() - start)
        check_tree(written, w)
        shutil.rmtree(target)
    return w["tree_files"] / statistics.median(ups), w["tree_files"] / statistics.median(downs)


def main() -> None:
    w = json.load(sys.stdin)
    ml = Mlflow(w["url"])
    phases = set(w["phases"])
    results: dict[str, float] = {}
    experiment_id = ml.post("experiments/create", {"name": "bench"})["experiment_id"]
    runs = [ml.create_run(experiment_id, 0) for _ in range(w["writers"] + 2)]
    ml.log_points(runs[0], points(w["seed"], 0, w["batch"]))  # warm up
    if "ingest" in phases:
        results["ingest_one"] = ingest(ml, w, runs[:1], w["ingest_batches_one_writer"])
        results["ingest_many"] = ingest(
            ml, w, runs[1 : 1 + w["writers"]], w["ingest_batches_per_writer"]
        )
    if "log_metric" in phases:
        results["log_metric_ms"] = log_metric_ms(ml, runs[-1], w["log_metric_calls"])
    if "search" in phases:
        search_experiment = ml.post("experiments/create", {"name": "search"})["experiment_id"]
        results["create_runs"] = populate(ml, w, search_experiment)
        analyze(w["database_url"])
        for n, shape in enumerate(w["searches"]):
            results[f"search_{n}_ms"] = search_ms(ml, w, search_experiment, shape)
            results[f"search_{n}_matches"] = matches(ml, w, search_experiment, shape)
        results["scan_s"] = scan_s(ml, w, search_experiment)
    if "history" in phases:
        results["history_s"] = history_s(ml, w, runs[-2])
    if "tree" in phases:
        results["tree_up"], results["tree_down"] = tree(ml, w, experiment_id)
    if "artifacts" in phases:
        transfers = artifacts(ml, w)
        results["upload"], results["download"], results["download_from_disk"] = transfers
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
