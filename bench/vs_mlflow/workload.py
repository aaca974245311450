"""The workload both drivers run, from one JSON description (standard library only).

The orchestrator builds the description; each driver receives it as JSON on stdin and
derives every run's params, tags, metrics and every ingested point from the seeds here,
so MLflow and Cairn store exactly the same data.
"""

from __future__ import annotations

import os
import random
from typing import Any

# Values drawn uniformly: `params.model = 'cnn'` keeps 1 run in 5 and `metrics.acc > 0.9`
# 1 in 5 (4% together, 200 of 5,000 runs); `tags.team = 'vision'` and
# `params.optimizer = 'adam'` keep 1 in 4 and 1 in 3 (about 8%).
MODELS = ["cnn", "rnn", "mlp", "transformer", "resnet"]
OPTIMIZERS = ["adam", "sgd", "rmsprop"]
TEAMS = ["vision", "nlp", "speech", "recsys"]
STAGES = ["dev", "staging", "prod"]
DATASETS = ["imagenet", "coco", "wiki", "librispeech", "movielens", "c4"]
BATCH = 1000
TREE_FOLDERS = 10
TREE_FILE_BYTES = 4096
START_TIME_MS = 1_767_225_600_000  # 2026-01-01; run n starts n seconds later

SEARCHES = [
    {
        "name": "metric threshold and param, by metric",
        "filter": "metrics.acc > 0.9 and params.model = 'cnn'",
        "order_by": ["metrics.acc DESC"],
    },
    {"name": "unfiltered", "filter": "", "order_by": []},
    {
        "name": "tag and param, by start time",
        "filter": "tags.team = 'vision' and params.optimizer = 'adam'",
        "order_by": ["attributes.start_time DESC"],
    },
]


def describe(runs: int, history: int, artifact_mib: int, tree_files: int) -> dict[str, Any]:
    """The full-size workload is describe(5000, 100_000, 256, 1000)."""
    return {
        "seed": 17,
        "runs": runs,
        "writers": 8,
        "batch": BATCH,
        "ingest_batches_one_writer": 30,
        "ingest_batches_per_writer": 8,
        "log_metric_calls": 500,
        "searches": SEARCHES,
        "search_calls": 30,
        "page": 100,
        "scan_page": 1000,
        "scans": 3,
        "history": history,
        "history_reads": 5,
        "artifact_mib": artifact_mib,
        "artifact_repeats": 3,
        "tree_files": tree_files,
        "tree_file_bytes": TREE_FILE_BYTES,
        "tree_repeats": 3,
    }


def evict(directory: str) -> None:
    """Writes back and drops from the page cache every file under directory, so that the
    next read of each comes from disk, as a download of an artifact logged a while ago
    does (one just written may still be in memory, as much of it as the writer left there)."""
    for folder, _, names in os.walk(directory):
        for name in names:
            descriptor = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(descriptor)
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)


def tree_paths(files: int) -> list[str]:
    """The tree's files, relative to its root, spread over TREE_FOLDERS folders."""
    return [f"part-{n % TREE_FOLDERS:02}/{n:06}.bin" for n in range(files)]


def check_tree(root: str, w: dict[str, Any]) -> None:
    """A downloaded tree must hold every file of the logged one, each of its size."""
    for path in tree_paths(w["tree_files"]):
        local = os.path.join(root, path)
        if not os.path.isfile(local) or os.path.getsize(local) != w["tree_file_bytes"]:
            raise RuntimeError(f"the downloaded tree lacks {path} or holds it cut")
    found = sum(len(files) for _, _, files in os.walk(root))
    if found != w["tree_files"]:
        raise RuntimeError(f"the downloaded tree holds {found} files")


def run_data(seed: int, n: int) -> dict[str, Any]:
    """Run n's start time and its first batch: 5 params, 5 tags, 5 metrics."""
    rng = random.Random(seed * 1_000_003 + n)
    acc = rng.uniform(0.5, 1.0)
    return {
        "start_time": START_TIME_MS + n * 1000,
        "params": {
            "model": rng.choice(MODELS),
            "optimizer": rng.choice(OPTIMIZERS),
            "lr": str(rng.choice([0.1, 0.01, 0.001, 0.0001])),
            "batch_size": str(rng.choice([32, 64, 128, 256])),
            "layers": str(rng.randrange(2, 50)),
        },
        "tags": {
            "team": rng.choice(TEAMS),
            "stage": rng.choice(STAGES),
            "dataset": rng.choice(DATASETS),
            "owner": f"user{rng.randrange(40)}",
            "git_commit": f"{rng.getrandbits(40):010x}",
        },
        "metrics": {
            "acc": acc,
            "loss": rng.uniform(0.01, 2.0),
            "f1": acc * rng.uniform(0.8, 1.0),
            "precision": rng.random(),
            "recall": rng.random(),
        },
    }


def points(
    seed: int, batch: int, size: int, key: str | None = None
) -> list[tuple[str, float, int]]:
    """Batch number `batch` of an ingest: (key, value, step) over 10 keys, or one key."""
    rng = random.Random(seed * 7_919 + batch)
    first = batch * size
    return [(key or f"m{i % 10}", rng.random(), first + i) for i in range(size)]
