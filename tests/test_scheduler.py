"""Stopping the scheduler is not an error, whatever state its jobs are in: the load test's server log showed
a job woken just before shutdown (its task created, never started) logged as a CancelledError traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from gql_mail.workers.scheduler import Scheduler


def job_tasks(scheduler: Scheduler) -> set[asyncio.Future[object]]:
    """APScheduler's own record of the job tasks it created and that have not finished (private; read only
    to set up the race and to know when the outcome of a job has been logged)."""
    return set(scheduler._scheduler._executors["default"]._pending_futures)


async def finished(tasks: set[asyncio.Future[object]]) -> None:
    """Wait until these job tasks are done. APScheduler's done-callback (which logs the outcome) was added
    before `asyncio.wait`'s, so it has run when this returns."""
    if tasks:
        await asyncio.wait(tasks, timeout=5)


async def started(job: Callable[[], Awaitable[None]], signal: asyncio.Event) -> Scheduler:
    """A running scheduler whose only job (due at once, then hourly) has set `signal`."""
    scheduler = Scheduler()
    scheduler.every("job", 3600, job)
    scheduler.start()
    async with asyncio.timeout(5):
        await signal.wait()
    return scheduler


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_shutdown_with_a_woken_job_not_yet_started_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    ran = asyncio.Event()

    async def job() -> None:
        nonlocal runs
        runs += 1
        ran.set()

    scheduler = await started(job, ran)
    await finished(job_tasks(scheduler))
    with caplog.at_level(logging.DEBUG, logger="apscheduler"):
        # Both reach the loop as callbacks, in this order: the wake-up creates the job's task, and the
        # shutdown, one callback later, cancels it before its first step.
        scheduler.run_now("job")
        scheduler.shutdown()
        await asyncio.sleep(0)  # one turn: both callbacks run
        woken = {t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "run_coroutine_job"}  # type: ignore[union-attr]
        assert woken, "the wake-up created no job task"
        await finished(woken)  # type: ignore[arg-type]
    assert all(t.cancelled() for t in woken) and runs == 1, "the woken job was cancelled before it started"
    assert not errors(caplog), caplog.text


async def test_shutdown_while_a_job_runs_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    entered = asyncio.Event()

    async def job() -> None:
        entered.set()
        await asyncio.Event().wait()

    with caplog.at_level(logging.DEBUG, logger="apscheduler"):
        scheduler = await started(job, entered)
        running = job_tasks(scheduler)
        scheduler.shutdown()
        await finished(running)
    assert not errors(caplog), caplog.text


async def test_a_failing_job_is_still_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The filter that hides shutdown must not hide real failures."""
    failing = asyncio.Event()

    async def job() -> None:
        failing.set()
        raise RuntimeError("boom")

    with caplog.at_level(logging.DEBUG, logger="apscheduler"):
        scheduler = await started(job, failing)
        await finished(job_tasks(scheduler))
        scheduler.shutdown()
    assert "boom" in caplog.text
