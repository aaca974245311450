"""The columns of a transfer's bar, driven by a clock of the test's own."""

import io
import re

from rich.console import Console
from rich.progress import Progress

from cairn import _progress


def test_the_bar_shows_size_rate_and_the_time_left_while_bytes_move() -> None:
    now = [0.0]
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    bars = Progress(
        *_progress.columns(), console=console, get_time=lambda: now[0], auto_refresh=False
    )
    task = bars.add_task("download x", total=10_000_000)
    for _ in range(4):
        bars.advance(task, 1_000_000)
        now[0] += 1.0
    console.print(bars.get_renderable())
    line = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).strip()
    # 4 MB moved at 1 MB/s, 6 MB left: six seconds.
    assert re.fullmatch(r"download x [━╸╺]+ +40% 4\.0/10\.0 MB 1\.0 MB/s 0:00:06", line), line


def test_a_long_label_keeps_its_end() -> None:
    label = "experiments/1/0123456789abcdef/artifacts/model/weights.bin"
    shortened = _progress._shortened(label)
    assert shortened.startswith("…") and shortened.endswith("model/weights.bin")
    assert len(shortened) == _progress.LABEL_WIDTH
    assert _progress._shortened("short.bin") == "short.bin"


def test_a_file_grown_since_it_was_listed_raises_the_total_with_it() -> None:
    """A tree's total is summed as it is listed: a file that grew before it was sent
    had the callable told (3005010, 3000020), more done than the whole."""
    calls: list[tuple[int, int]] = []
    with _progress.meter(
        lambda done, total: calls.append((done, total)), "upload", "t", 10
    ) as moved:
        moved.reach(6)
        moved.reach(12)
    assert calls == [(0, 10), (6, 10), (12, 12)]


def test_files_moving_at_once_each_count_into_the_tree() -> None:
    """A tree's files go several at once, each counting from its own start: each moves
    the tree's count by what it moved, never back when it is sent again."""
    calls: list[tuple[int, int]] = []
    with _progress.meter(
        lambda done, total: calls.append((done, total)), "upload", "t/", 30
    ) as tree:
        first, second = tree.part(10), tree.part(20)
        first.reach(4)
        second.reach(15)
        first.reach(2)  # sent again from its start: shown already
        first.reach(10)
        second.reach(20)
    assert calls == [(0, 30), (4, 30), (19, 30), (25, 30), (30, 30)]
