"""`cairn metrics history RUN KEY`: the points of one metric, and a plot of them."""

from __future__ import annotations

import click

from ..types import Metric
from ._calls import call
from ._connection import connection_options
from ._output import JSON, emit_list, is_terminal, output_option, plain

COLUMNS = [("step", "Step"), ("value", "Value"), ("timestamp", "Time")]
# The plot's size when stdout is not a terminal (plotext would guess 80 x 24).
PIPED_SIZE = (100, 25)


@click.group("metrics")
def group() -> None:
    """Metrics: the history of one metric of a run."""


@group.command("history")
@click.argument("run_id")
@click.argument("key")
@click.option(
    "--max-points",
    type=click.IntRange(min=1),
    help="at most this many points (the server keeps the first, last, smallest and largest)",
)
@click.option("--plot/--no-plot", default=True, help="draw the points above the table")
@output_option
@connection_options
def history(run_id: str, key: str, max_points: int | None, plot: bool, output: str) -> None:
    """Every point of metric KEY of run RUN_ID, in step order: a plot in the terminal and
    a table, or JSON (no plot)."""
    points = call(
        lambda client: client.tracking.get_metric_history(run_id, key, max_points=max_points)
    )
    if plot and output != JSON and points:
        click.echo(draw(points, f"{key} of run {run_id}"))
    emit_list(output, [plain(p) for p in points], COLUMNS, f"{key} of run {run_id}")


def draw(points: list[Metric], title: str) -> str:
    """The points as a line plot, value over step, in text."""
    import plotext  # imported here: only this command draws

    plotext.clear_figure()
    plotext.plot([p.step for p in points], [p.value for p in points], marker="braille")
    plotext.title(title)
    plotext.xlabel("step")
    if is_terminal():
        return str(plotext.build())
    plotext.plotsize(*PIPED_SIZE)
    return str(plotext.uncolorize(plotext.build()))  # no colour codes in a file
