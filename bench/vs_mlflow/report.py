"""The side-by-side table and what it was measured on."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cairn._clients._many_files import DOWNLOADS_AT_ONCE, UPLOADS_AT_ONCE

Results = dict[str, float]
ROOT = Path(__file__).parents[2]


def checkout() -> str:
    """The commit measured, and whether the working tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "Cairn outside a git checkout"
    changed = git("status", "--porcelain", "--untracked-files=no")
    return f"Cairn at {commit}" + (" with uncommitted changes" if changed else "")


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?"
    )
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    kib = next(int(ln.split()[1]) for ln in meminfo if ln.startswith("MemTotal:"))
    return f"{model}, {os.cpu_count()} cores, {kib / 1024**2:.0f} GiB RAM"


def _mlflow_download_threads() -> int:
    """As MLflow 3.17.2's ArtifactRepository sizes its thread pool (artifact_repo.py)."""
    return min(2 * (os.cpu_count() or 10), 20)


def _rate(value: float) -> str:
    return f"{value / 1000:,.1f}k" if value >= 10_000 else f"{value:,.0f}"


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 10 else f"{value:.0f} ms"


def _s(value: float) -> str:
    return f"{value:.2f} s"


def _faster(mlflow: float, cairn: float, higher_is_better: bool) -> str:
    ratio = cairn / mlflow if higher_is_better else mlflow / cairn
    return f"{ratio:.1f}x" if ratio >= 1 else f"{ratio:.1f}x (behind)"


Row = tuple[str, str, Callable[[float], str], str, bool]


def _rows(w: dict[str, Any], matched: list[int]) -> list[Row]:
    """(label, result key, format, unit shown in the MLflow column, higher is better)."""
    rows: list[Row] = [
        (f"ingest, {w['batch']:,}-point batches, 1 writer", "ingest_one", _rate, " pts/s", True),
        (
            f"ingest, {w['batch']:,}-point batches, {w['writers']} writers",
            "ingest_many",
            _rate,
            " pts/s",
            True,
        ),
        ("log one metric, p50", "log_metric_ms", _ms, "", False),
        (
            f"create a run + log its first batch, {w['writers']} writers",
            "create_runs",
            _rate,
            " runs/s",
            True,
        ),
    ]
    for n, shape in enumerate(w["searches"]):
        what = f"`{shape['filter']}`" if shape["filter"] else "unfiltered"
        if shape["order_by"]:
            what += f" order by `{', '.join(shape['order_by'])}`"
        label = f"search {what}, {w['page']} rows ({matched[n]:,} match), p50"
        rows.append((label, f"search_{n}_ms", _ms, "", False))
    rows += [
        (f"scan all {w['runs']:,} runs, {w['scan_page']:,} a page", "scan_s", _s, "", False),
        (f"read a {w['history']:,}-point metric history, p50", "history_s", _s, "", False),
    ]
    return rows


def print_table(
    w: dict[str, Any], mlflow: Results, cairn: Results, context: dict[str, Any]
) -> None:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(context["started"]))
    before, after = context["load"]
    print(f"{when}; {context['machine']}; {context['seconds']:.0f} s in all; {context['cairn']}")
    print(
        f"load average before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, "
        f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}"
    )
    print(
        f"PostgreSQL {context['postgres']} (pgserver), a fresh cluster with default settings "
        "for each system, one system after the other; ANALYZE after loading the runs searched"
    )
    print(
        f"MLflow 3.17.2: `mlflow server --workers {context['workers']}` (uvicorn), "
        "--backend-store-uri postgresql, --serve-artifacts --artifacts-destination <local dir>; "
        "REST API through keep-alive requests.Sessions (one a thread); the tree through "
        "MlflowClient, whose log_artifacts sends one file after another and whose "
        f"download_artifacts fetches on {_mlflow_download_threads()} threads "
        "(2 a CPU, at most 20). Compared with TCP_NODELAY "
        "set on the connections its workers accept (bench/vs_mlflow/nodelay/sitecustomize.py): "
        f"as started, its log-metric p50 is {context['default_log_metric_ms']:.1f} ms, "
        f"with TCP_NODELAY {mlflow['log_metric_ms']:.1f} ms"
    )
    print(
        "Cairn: `cairn serve all`, filesystem artifacts; its async client, which moves "
        f"a tree's small files {UPLOADS_AT_ONCE} at once up, {DOWNLOADS_AT_ONCE} down"
    )
    print()
    print(
        f"| workload ({w['runs']:,} runs, each with 5 params, 5 tags, 5 metrics) "
        "| MLflow | Cairn | Cairn ahead by |"
    )
    print("|---|---|---|---|")
    matched = [int(cairn[f"search_{n}_matches"]) for n in range(len(w["searches"]))]
    for label, key, fmt, unit, higher in _rows(w, matched):
        print(
            f"| {label} | {fmt(mlflow[key])}{unit} | {fmt(cairn[key])} "
            f"| {_faster(mlflow[key], cairn[key], higher)} |"
        )
    _print_transfers(w, mlflow, cairn)
    _check_matches(w, mlflow, cairn)


def _print_transfers(w: dict[str, Any], mlflow: Results, cairn: Results) -> None:
    """The artifact rows: up / down, then down again from disk alone."""
    artifact = f"{w['artifact_mib']} MiB artifact"
    tree = f"{w['tree_files']:,}-file tree ({w['tree_file_bytes'] // 1024} KiB each)"
    rows = [
        (f"{artifact} upload / download", ("upload", "download"), " MiB/s"),
        (
            f"{artifact} download, stored file out of the page cache",
            ("download_from_disk",),
            " MiB/s",
        ),
        (f"{tree} log_artifacts / download", ("tree_up", "tree_down"), " files/s"),
    ]
    for label, keys, unit in rows:
        rates = [(_rate(mlflow[key]), _rate(cairn[key])) for key in keys]
        ahead = " / ".join(_faster(mlflow[key], cairn[key], True) for key in keys)
        print(
            f"| {label} | {' / '.join(m for m, _ in rates)}{unit} "
            f"| {' / '.join(c for _, c in rates)} | {ahead} |"
        )


def _check_matches(w: dict[str, Any], mlflow: Results, cairn: Results) -> None:
    """Both stored the same runs: every filter must match as many runs in each."""
    for n, shape in enumerate(w["searches"]):
        key = f"search_{n}_matches"
        if mlflow[key] != cairn[key]:
            print(
                f"\nWARNING: `{shape['filter']}` matches {mlflow[key]:.0f} runs in MLflow "
                f"and {cairn[key]:.0f} in Cairn"
            )
