"""start_run: buffered metrics sent in the background, the run's end status."""

import asyncio

import pytest

import cairn
from cairn.exceptions import FailedPreconditionError
from cairn.types import RunStatus


async def test_metrics_are_flushed_and_the_run_finishes(
    tracking: cairn.TrackingClient, experiment_id: str
) -> None:
    async with tracking.start_run(experiment_id, run_name="train", batch_size=100) as run:
        await run.log_param("lr", 0.01)
        for step in range(1050):
            await run.log_metric("loss", 1 / (step + 1), step=step)
        await run.flush()
        assert len(await tracking.get_metric_history(run.run_id, "loss")) == 1050
        await run.log_metric("loss", 0.0, step=1050)
    final = await tracking.get_run(run.run_id)
    assert final.info.status == RunStatus.FINISHED and final.info.end_time
    assert final.info.run_name == "train"
    assert final.data.params == {"lr": "0.01"}
    assert len(await tracking.get_metric_history(run.run_id, "loss")) == 1051


async def test_an_exception_marks_the_run_failed_after_flushing(tracking, experiment_id) -> None:
    with pytest.raises(RuntimeError, match="diverged"):
        async with tracking.start_run(experiment_id) as run:
            await run.log_metric("loss", float("nan"))
            raise RuntimeError("diverged")
    final = await tracking.get_run(run.run_id)
    assert final.info.status == RunStatus.FAILED
    assert len(await tracking.get_metric_history(run.run_id, "loss")) == 1


async def test_the_buffer_is_bounded(tracking, experiment_id) -> None:
    async with tracking.start_run(experiment_id, batch_size=10, max_buffered=20) as run:
        for step in range(200):
            await run.log_metric("m", step, step=step)
            assert len(run._buffer) <= 20
    assert len(await tracking.get_metric_history(run.run_id, "m")) == 200


async def test_a_failed_background_send_surfaces(tracking, experiment_id) -> None:
    with pytest.raises(FailedPreconditionError):
        async with tracking.start_run(experiment_id, batch_size=5) as run:
            await tracking.delete_run(run.run_id)
            for step in range(10):
                await run.log_metric("m", step, step=step)
            await asyncio.sleep(0.2)
            await run.flush()
