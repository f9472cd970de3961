"""APScheduler is the clock, not the queue: a few interval jobs poll; our tables hold the work.

Kept behind this one class so a move to APScheduler 4 touches one file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

# "maximum number of running instances reached" is expected: a wake-up while a drain runs is absorbed by it.
logging.getLogger("apscheduler").setLevel(logging.ERROR)


def _not_a_cancelled_job(record: logging.LogRecord) -> bool:
    """A job cut off by shutdown is no error (what it held comes back when its lease expires), but APScheduler
    logs its CancelledError with a traceback -- also for a job woken just before shutdown whose task never
    started, where no wrapper of ours could catch it."""
    return record.exc_info is None or not isinstance(record.exc_info[1], asyncio.CancelledError)


logging.getLogger("apscheduler.executors.default").addFilter(_not_a_cancelled_job)


class Scheduler:
    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)

    def every(self, job_id: str, seconds: float, func: Callable[[], Awaitable[None]]) -> None:
        self._scheduler.add_job(
            func,
            "interval",
            seconds=seconds,
            id=job_id,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
            misfire_grace_time=None,
        )

    def run_now(self, job_id: str) -> None:
        job = self._scheduler.get_job(job_id)
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC))

    def pause(self) -> None:
        """Hold every job (tests that drive a worker by hand)."""
        self._scheduler.pause()

    def resume(self) -> None:
        self._scheduler.resume()

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
