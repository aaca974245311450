"""Progress of transfers, for people and for programs: the one way every method that
moves bytes reports it.

`progress=` takes:
- False or None: nothing is shown;
- True: on stderr, a rich bar (size, rate, time left) when stderr is a terminal, or else
  one line when the transfer ends (size, time, rate): a log file gets no carriage
  returns;
- a `rich.console.Console`: the same, on that console;
- a callable: called with (bytes_done, bytes_total) as bytes move.

A transfer is one file or one whole tree: a tree shows one bar, whose total is the size
of all its files, known before the first byte moves (raised should a file grow since).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeAlias, cast

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as Bars
    from rich.progress import ProgressColumn

Callback = Callable[[int, int], None]
# What `progress=` accepts; a Meter is passed on by methods that move several files as one
# transfer (a model, a tree), so that the files fill one bar.
Progress: TypeAlias = "bool | Callback | Console | Meter | None"
# Room left for the other columns on an 80-column terminal.
LABEL_WIDTH = 28


class _Display(Protocol):
    def show(self, done: int, total: int | None) -> None: ...

    def finish(self, done: int, seconds: float) -> None: ...

    def close(self) -> None: ...


class Meter:
    """The bytes one transfer has moved so far, shown as its `progress=` asked."""

    def __init__(self, display: _Display, total: int | None) -> None:
        self.done = 0
        self.total = total
        self._display = display

    def reach(self, position: int) -> None:
        """Moves to position (bytes since the transfer began), never back: an upload
        sent again after a lost connection catches up silently with what was shown."""
        if position > self.done:
            self.done = position
            if self.total is not None and position > self.total:
                self.total = position  # a file grew since it was listed: done <= total
            self._display.show(position, self.total)

    def advance(self, count: int) -> None:
        self.reach(self.done + count)

    def from_thread(self, start: int) -> Callable[[int], None]:
        """For a worker thread moving bytes: moved(n) reaches start + n on the event loop
        this is called on (a Meter is not to be touched from other threads)."""
        loop = asyncio.get_running_loop()

        def moved(count: int) -> None:
            loop.call_soon_threadsafe(self.reach, start + count)

        return moved

    def part(self, total: int) -> Meter:
        """A Meter for one file of this transfer that moves beside others (a tree's): its
        bytes count here as they move, its own count starting at 0."""
        return Meter(_Part(self), total)


@contextlib.contextmanager
def meter(progress: Progress, action: str, label: str, total: int | None) -> Iterator[Meter]:
    """A Meter for one transfer ("upload", "models/churn/v1.onnx", its size when known).

    Given a Meter, yields it as it is: the caller is a part of a larger transfer.
    The display ends complete only when the transfer succeeds.
    """
    if isinstance(progress, Meter):
        yield progress
        return
    display = _display_for(progress, action, label, total)
    counted = Meter(display, total)
    started = time.monotonic()
    try:
        yield counted
        display.finish(counted.done, time.monotonic() - started)
    finally:
        display.close()


def _display_for(
    progress: bool | Callback | Console | None, action: str, label: str, total: int | None
) -> _Display:
    if progress is None or progress is False:
        return _Silent()
    if callable(progress):
        return _Callback(progress, total)
    # Any other true value means stderr, as True always has.
    on_stderr = not hasattr(progress, "is_terminal")
    console = _stderr() if on_stderr else cast("Console", progress)
    # rich decides, so FORCE_COLOR, TTY_COMPATIBLE and TTY_INTERACTIVE are respected.
    if console.is_terminal:
        return _Bar(console, f"{action} {_shortened(label)}", total, on_stderr)
    return _Line(console, f"{action} {label}")


class _Silent:
    def show(self, done: int, total: int | None) -> None:
        pass

    def finish(self, done: int, seconds: float) -> None:
        pass

    def close(self) -> None:
        pass


class _Part:
    """The display of a part of a transfer: what the part moves, the whole moves too."""

    def __init__(self, whole: Meter) -> None:
        self._whole = whole
        self._shown = 0

    def show(self, done: int, total: int | None) -> None:
        self._whole.advance(done - self._shown)
        self._shown = done

    def finish(self, done: int, seconds: float) -> None:
        pass

    def close(self) -> None:
        pass


class _Callback:
    """Calls (done, total) at the start and per chunk; total is 0 while unknown (a file
    object), and the last call has done == total."""

    def __init__(self, callback: Callback, total: int | None) -> None:
        self._callback = callback
        self._total = total
        callback(0, total or 0)

    def show(self, done: int, total: int | None) -> None:
        self._total = total  # raised when a file grew since it was listed
        self._callback(done, total or 0)

    def finish(self, done: int, seconds: float) -> None:
        # The size was unknown, or an object changed between listing and reading it.
        if done != self._total:
            self._callback(done, done)

    def close(self) -> None:
        pass


class _Line:
    """One line when the transfer ends, for logs and pipes."""

    def __init__(self, console: Console, description: str) -> None:
        self._console = console
        self._description = description

    def show(self, done: int, total: int | None) -> None:
        pass

    def finish(self, done: int, seconds: float) -> None:
        from rich.filesize import decimal
        from rich.text import Text

        rate = decimal(int(done / max(seconds, 1e-3)))
        took = f"{seconds:.2f}" if seconds < 10 else f"{seconds:.0f}"
        line = f"{self._description}: {decimal(done)} in {took} s ({rate}/s)"
        # soft_wrap: a long path stays on its one line instead of being folded at 80.
        self._console.print(Text(line), soft_wrap=True, highlight=False)

    def close(self) -> None:
        pass


class _Bar:
    """A task on the console's bars; transfers running at once share one display."""

    def __init__(
        self, console: Console, description: str, total: int | None, on_stderr: bool
    ) -> None:
        self._bars = _SharedBars.join(console, on_stderr)
        self._task = self._bars.add_task(description, total=total)

    def show(self, done: int, total: int | None) -> None:
        self._bars.update(self._task, total=total, completed=done)

    def finish(self, done: int, seconds: float) -> None:
        self._bars.update(self._task, total=done, completed=done)

    def close(self) -> None:
        _SharedBars.leave(self._bars)


class _SharedBars:
    """One rich display per console while transfers run on it: rich draws one live
    display per console at a time, and transfers may run at once (asyncio.gather)."""

    _lock = threading.Lock()
    _active: ClassVar[dict[int, tuple[Bars, int]]] = {}
    # The console on stderr that draws now (progress=True), which transfers join.
    stderr: ClassVar[Console | None] = None

    @classmethod
    def join(cls, console: Console, on_stderr: bool) -> Bars:
        with cls._lock:
            bars, users = cls._active.get(id(console), (None, 0))
            if bars is None:
                bars = _new_bars(console)
                bars.start()
                if on_stderr:
                    cls.stderr = console
            cls._active[id(console)] = (bars, users + 1)
            return bars

    @classmethod
    def leave(cls, bars: Bars) -> None:
        with cls._lock:
            key = id(bars.console)
            _, users = cls._active[key]
            if users > 1:
                cls._active[key] = (bars, users - 1)
                return
            del cls._active[key]
            if bars.console is cls.stderr:
                cls.stderr = None
            # Under the lock: a transfer entering now must not start bars on this
            # console before these have stopped.
            bars.stop()  # draws the final state, which stays on the screen


def columns() -> tuple[ProgressColumn, ...]:
    """What a bar shows: the transfer, the bar, its share, bytes done of the total,
    the rate and the time left (the time taken once done)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return (
        # Paths are printed as they are, never read as rich markup ("[x]" is a name).
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(elapsed_when_finished=True),
    )


def _new_bars(console: Console) -> Bars:
    # Imported here: `import cairn` should not pay for rich, which only progress needs.
    from rich.progress import Progress as Bars

    return Bars(*columns(), console=console)


def _stderr() -> Console:
    """The console on stderr that draws bars now, so that transfers at once share its
    display, or a new one (which looks at stderr and the environment afresh)."""
    if (drawing := _SharedBars.stderr) is not None:
        return drawing
    from rich.console import Console

    return Console(stderr=True)


def _shortened(label: str) -> str:
    """The end of a long label: a path's last segments tell files apart."""
    return label if len(label) <= LABEL_WIDTH else "…" + label[-(LABEL_WIDTH - 1) :]
