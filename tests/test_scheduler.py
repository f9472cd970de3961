"""Stopping the scheduler is not an error, whatever state its jobs are in: the load test's server log showed
a job woken just before shutdown (its task created, never started) logged as a CancelledError traceback."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gql_mail.workers.scheduler import Scheduler


def submitted_but_not_started(scheduler: Scheduler) -> bool:
    """APScheduler's own record of the job tasks it created and that have not finished (private, read only to
    set up the race; the job below finishes in its first step, so unfinished means not started)."""
    return bool(scheduler._scheduler._executors["default"]._pending_futures)


async def test_shutdown_with_a_woken_job_not_yet_started_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    started = asyncio.Event()

    async def job() -> None:
        nonlocal runs
        runs += 1
        started.set()

    scheduler = Scheduler()
    scheduler.every("job", 3600, job)
    scheduler.start()
    async with asyncio.timeout(5):
        await started.wait()
    with caplog.at_level(logging.DEBUG, logger="apscheduler"):
        scheduler.run_now("job")
        # Let APScheduler's wake-up submit the job (a task now exists) but not run it, then stop.
        for _ in range(50):
            if submitted_but_not_started(scheduler):
                break
            await asyncio.sleep(0)
        assert submitted_but_not_started(scheduler), "could not catch the woken job before it started"
        scheduler.shutdown()
        await asyncio.sleep(0.01)
    assert runs == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_shutdown_while_a_job_runs_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    entered = asyncio.Event()

    async def job() -> None:
        entered.set()
        await asyncio.Event().wait()

    scheduler = Scheduler()
    scheduler.every("job", 3600, job)
    with caplog.at_level(logging.DEBUG, logger="apscheduler"):
        scheduler.start()
        async with asyncio.timeout(5):
            await entered.wait()
        scheduler.shutdown()
        await asyncio.sleep(0.01)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_failing_job_is_still_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The filter that hides shutdown must not hide real failures."""
    failed = asyncio.Event()

    async def job() -> None:
        failed.set()
        raise RuntimeError("boom")

    scheduler = Scheduler()
    scheduler.every("job", 3600, job)
    with caplog.at_level(logging.DEBUG, logger="apscheduler"):
        scheduler.start()
        async with asyncio.timeout(5):
            await failed.wait()
        await asyncio.sleep(0.01)
        scheduler.shutdown()
    assert "boom" in caplog.text
