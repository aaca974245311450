"""`cairn metrics history RUN KEY`: the points of one metric, and a plot of them."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from decimal import Decimal

import click

from .._client import Client
from .._headers import MAX_TIMEOUT_SECONDS
from .._read_ahead import ReadAhead
from .._tables import visible
from ..exceptions import CairnError, DeadlineExceededError
from ..types import Metric
from ._calls import call
from ._connection import connection_options, resolve
from ._output import (
    JSON,
    echo,
    emit_pages,
    in_colour,
    is_terminal,
    output_option,
    plain,
    write_text,
)

COLUMNS = [("step", "Step"), ("value", "Value"), ("timestamp", "Time")]
# The deadline of the history's stream: none that printing it could pass (300,000 rows
# take longer than the 30 s of a call to print, a `| less` longer still, and the stream
# is read as they are). The timeout bounds each wait for points instead (_batches).
WHILE_PRINTED = MAX_TIMEOUT_SECONDS
# The most points a plot is drawn from: more than its columns can show apart.
PLOT_POINTS = 1000
# The plot's size when stdout is not a terminal (plotext would guess 80 x 24).
PIPED_SIZE = (100, 25)
# The server keeps the first, last, smallest and largest point: fewer cannot be asked.
MIN_MAX_POINTS = 4
MAX_MAX_POINTS = 2**31 - 1
# plotext writes its ticks out in full, so from about 1e77 (or below 1e-74) a plot was
# a blank box, and its ticks overflow past about 1e306 (to infinity, then NaN): values
# outside these bounds are drawn divided by a power of ten, which the axis's label names,
# and their ticks take a few digits.
PLOTTABLE = (1e-4, 1e6)


def _max_points(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    # The server's rule (GetMetricHistory): 0 for every point, else at least 4, in the
    # request's 32 bits.
    if value is not None and value != 0 and not MIN_MAX_POINTS <= value <= MAX_MAX_POINTS:
        raise click.BadParameter(
            f"must be 0 (every point) or from {MIN_MAX_POINTS} to {MAX_MAX_POINTS}"
        )
    return value


@click.group("metrics")
def group() -> None:
    """Metrics: the history of one metric of a run."""


@group.command("history")
@click.argument("run_id")
@click.argument("key")
@click.option(
    "--max-points",
    type=int,
    callback=_max_points,
    help="at most this many points, 4 or more; 0 for every point (the server keeps the"
    " first, last, smallest and largest)",
)
@click.option("--plot/--no-plot", default=True, help="draw the points above the table")
@output_option
@connection_options
def history(run_id: str, key: str, max_points: int | None, plot: bool, output: str) -> None:
    """Every point of metric KEY of run RUN_ID, in step order: a plot in the terminal and
    a table, or JSON (no plot)."""
    title = f"{key} of run {run_id}"

    async def work(client: Client) -> None:
        if plot and output != JSON:
            plotted = await client.tracking.get_metric_history(
                run_id, key, max_points=_plotted(max_points)
            )
            if plotted:
                show_plot(plotted, title)
        points = client.tracking.iter_metric_history(
            run_id, key, max_points=max_points, timeout=WHILE_PRINTED
        )
        idle = resolve(click.get_current_context()).timeout
        await emit_pages(output, _batches(points, idle), plain, COLUMNS, title)

    call(work)


def _plotted(max_points: int | None) -> int:
    """How many points the plot asks for: at most PLOT_POINTS, which the server picks
    keeping the first, last, smallest and largest, so that a plot of millions of
    points costs no more than one of a thousand (the table has them all)."""
    return max_points if max_points and max_points <= PLOT_POINTS else PLOT_POINTS


async def _batches(points: ReadAhead[Metric], idle: float | None) -> AsyncIterator[list[Metric]]:
    """The points as they arrive, a batch at a time; DeadlineExceededError once none has
    arrived for idle seconds (the connection's timeout) while they were waited for,
    which printing them does not count toward."""
    while True:
        try:
            async with asyncio.timeout(idle):
                batch = await points.next_batch()
        except StopAsyncIteration:
            return
        except TimeoutError as error:
            if isinstance(error, CairnError):  # the stream's own DEADLINE_EXCEEDED
                raise
            raise DeadlineExceededError(
                f"no point of the history arrived in {idle:g} s (--timeout)"
            ) from None
        yield batch


def show_plot(points: list[Metric], title: str) -> None:
    """Draws the finite points and says how many were left out; a plot that cannot be
    drawn is a note on stderr, never a failure: the table of numbers still follows."""
    finite = [p for p in points if math.isfinite(p.value)]
    try:
        plot = draw(finite, visible(title)) if finite else ""
    except Exception as error:  # plotext's bugs must not cost the user the numbers
        click.echo(f"(no plot: {type(error).__name__}: {error})", err=True)
    else:  # written apart: stdout failing is the command's failure, not the plot's
        if plot:
            write_text(plot + "\n")  # through stdout's guard, as click.echo to ASCII is not
    left_out = len(points) - len(finite)
    if left_out:
        echo(f"({left_out} of {len(points)} points not plotted: NaN or infinite)")


def draw(points: list[Metric], title: str) -> str:
    """The points as a line plot, value over step, in text."""
    import plotext  # imported here: only this command draws

    values, power = scaled([p.value for p in points])
    plotext.clear_figure()
    plotext.plot([p.step for p in points], values, marker="braille")
    plotext.title(title)
    plotext.xlabel("step")
    if power:
        plotext.ylabel(f"value / 1e{power}")
    if not is_terminal():
        plotext.plotsize(*PIPED_SIZE)
    plot = str(plotext.build())
    return plot if in_colour() else str(plotext.uncolorize(plot))


def scaled(values: list[float]) -> tuple[list[float], int]:
    """values as plotext can draw them, and the power of ten they were divided by (0:
    as they are): the largest comes to between 1 and 10 when it is outside PLOTTABLE.
    The values are finite."""
    largest = max(abs(value) for value in values)
    if largest == 0 or PLOTTABLE[0] <= largest <= PLOTTABLE[1]:
        return values, 0
    power = math.floor(math.log10(largest))
    # In decimal: 10.0 ** -320 is no float, and 10.0 ** -310 a rounded subnormal.
    return [float(Decimal(value).scaleb(-power)) for value in values], power
