"""The workload through Cairn's async client, as mlflow_driver.py runs it through MLflow."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg

import cairn
from cairn.types import Metric, Param, RunTag

from .workload import check_tree, evict, points, run_data

MIB = 1024**2


def _metrics(batch: list[tuple[str, float, int]]) -> list[Metric]:
    now = time.time_ns() // 1_000_000
    return [Metric(key, value, now, step) for key, value, step in batch]


async def ingest(
    client: cairn.TrackingClient, w: dict[str, Any], run_ids: list[str], batches: int
) -> float:
    payloads = [points(w["seed"], n, w["batch"]) for n in range(batches)]

    async def writer(run_id: str) -> None:
        for payload in payloads:
            await client.log_batch(run_id, metrics=_metrics(payload), synchronous=True)

    start = time.perf_counter()
    await asyncio.gather(*(writer(r) for r in run_ids))
    return len(run_ids) * batches * w["batch"] / (time.perf_counter() - start)


async def log_metric_ms(client: cairn.TrackingClient, run_id: str, calls: int) -> float:
    samples = []
    for step in range(calls):
        start = time.perf_counter()
        await client.log_metric(run_id, "latency", 1.0, step=step, synchronous=True)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def populate(client: cairn.TrackingClient, w: dict[str, Any], experiment_id: str) -> float:
    """Runs per second, each created then given its first batch, by 8 writers."""
    queue = iter(range(w["runs"]))

    async def writer() -> None:
        for n in queue:
            data = run_data(w["seed"], n)
            run = await client.create_run(experiment_id, start_time=data["start_time"])
            await client.log_batch(
                run.info.run_id,
                metrics=_metrics([(k, v, 0) for k, v in data["metrics"].items()]),
                params=[Param(k, v) for k, v in data["params"].items()],
                tags=[RunTag(k, v) for k, v in data["tags"].items()],
                synchronous=True,
            )

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(w["writers"])))
    return w["runs"] / (time.perf_counter() - start)


async def analyze(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


async def search_ms(
    client: cairn.TrackingClient, w: dict[str, Any], experiment_id: str, shape: dict[str, Any]
) -> float:
    samples = []
    for _ in range(3 + w["search_calls"]):  # three to warm up
        start = time.perf_counter()
        await client.search_runs(
            [experiment_id], shape["filter"], order_by=shape["order_by"], max_results=w["page"]
        )
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples[3:])


async def matches(
    client: cairn.TrackingClient, w: dict[str, Any], experiment_id: str, shape: dict[str, Any]
) -> int:
    """How many runs a shape matches, read page by page (scan_page runs a page)."""
    seen, token = 0, None
    while True:
        page = await client.search_runs(
            [experiment_id],
            shape["filter"],
            order_by=shape["order_by"],
            max_results=w["scan_page"],
            page_token=token,
        )
        seen += len(page)
        token = page.token
        if not token:
            return seen


async def scan_s(client: cairn.TrackingClient, w: dict[str, Any], experiment_id: str) -> float:
    samples = []
    for _ in range(w["scans"]):
        start = time.perf_counter()
        seen = await matches(client, w, experiment_id, {"filter": "", "order_by": []})
        samples.append(time.perf_counter() - start)
        if seen != w["runs"]:
            raise RuntimeError(f"the scan saw {seen} runs")
    return statistics.median(samples)


async def history_s(client: cairn.TrackingClient, w: dict[str, Any], run_id: str) -> float:
    for n in range(w["history"] // w["batch"]):
        batch = _metrics(points(w["seed"] + 1, n, w["batch"], key="h"))
        await client.log_batch(run_id, metrics=batch, synchronous=True)
    samples = []
    for _ in range(w["history_reads"]):
        start = time.perf_counter()
        history = await client.get_metric_history(run_id, "h")
        samples.append(time.perf_counter() - start)
        if len(history) != w["history"]:
            raise RuntimeError(f"the history held {len(history)} points")
    return statistics.median(samples)


async def artifacts(port: int, w: dict[str, Any]) -> tuple[float, float, float]:
    """MiB/s up, down right after the upload, and down with the stored file on disk only."""
    source = Path(w["work_dir"], "artifact.bin")
    target = Path(w["work_dir"], "cairn-download.bin")
    ups, downs, from_disk = [], [], []
    async with cairn.ArtifactClient.insecure_connection("127.0.0.1", port, timeout=None) as client:

        async def download() -> float:
            start = time.perf_counter()
            await client.download("bench/big.bin", target)
            seconds = time.perf_counter() - start
            _check_and_remove(target, w["artifact_mib"] * MIB)
            return seconds

        for _ in range(w["artifact_repeats"]):
            start = time.perf_counter()
            await client.upload("bench/big.bin", source, overwrite=True)
            ups.append(time.perf_counter() - start)
            downs.append(await download())
            evict(w["store_dir"])
            from_disk.append(await download())
    mib = w["artifact_mib"]
    return (
        mib / statistics.median(ups),
        mib / statistics.median(downs),
        mib / statistics.median(from_disk),
    )


async def tree(
    client: cairn.TrackingClient, w: dict[str, Any], experiment_id: str
) -> tuple[float, float]:
    """Files per second up and down: the tree logged to a fresh run each time, read back."""
    source = Path(w["work_dir"], "tree")
    ups, downs = [], []
    for repeat in range(w["tree_repeats"]):
        run_id = (await client.create_run(experiment_id)).info.run_id
        start = time.perf_counter()
        await client.log_artifacts(run_id, source, "tree")
        ups.append(time.perf_counter() - start)
        target = Path(w["work_dir"], f"cairn-tree-{repeat}")
        start = time.perf_counter()
        written = await client.download_artifacts(run_id, "tree", target)
        downs.append(time.perf_counter() - start)
        check_tree(written, w)
        shutil.rmtree(target)
    return w["tree_files"] / statistics.median(ups), w["tree_files"] / statistics.median(downs)


def _check_and_remove(download: Path, size: int) -> None:
    if download.stat().st_size != size:
        raise RuntimeError("the download is not the upload's size")
    download.unlink()


async def run(port: int, w: dict[str, Any]) -> dict[str, float]:
    """The results under the keys mlflow_driver.py uses."""
    phases = set(w["phases"])
    results: dict[str, float] = {}
    async with cairn.TrackingClient.insecure_connection("127.0.0.1", port, timeout=600) as client:
        experiment_id = await client.create_experiment("bench")
        runs = [
            (await client.create_run(experiment_id)).info.run_id for _ in range(w["writers"] + 2)
        ]
        await client.log_batch(runs[0], metrics=_metrics(points(w["seed"], 0, w["batch"])))
        if "ingest" in phases:
            results["ingest_one"] = await ingest(
                client, w, runs[:1], w["ingest_batches_one_writer"]
            )
            results["ingest_many"] = await ingest(
                client, w, runs[1 : 1 + w["writers"]], w["ingest_batches_per_writer"]
            )
        if "log_metric" in phases:
            results["log_metric_ms"] = await log_metric_ms(client, runs[-1], w["log_metric_calls"])
        if "search" in phases:
            search_experiment = await client.create_experiment("search")
            results["create_runs"] = await populate(client, w, search_experiment)
            await analyze(w["database_url"])
            for n, shape in enumerate(w["searches"]):
                results[f"search_{n}_ms"] = await search_ms(client, w, search_experiment, shape)
                results[f"search_{n}_matches"] = await matches(client, w, search_experiment, shape)
            results["scan_s"] = await scan_s(client, w, search_experiment)
        if "history" in phases:
            results["history_s"] = await history_s(client, w, runs[-2])
        if "tree" in phases:
            results["tree_up"], results["tree_down"] = await tree(client, w, experiment_id)
    if "artifacts" in phases:
        transfers = await artifacts(port, w)
        results["upload"], results["download"], results["download_from_disk"] = transfers
    return results
