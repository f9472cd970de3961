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


class Scheduler:
    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._stopping = False

    def every(self, job_id: str, seconds: float, func: Callable[[], Awaitable[None]]) -> None:
        async def job() -> None:
            try:
                await func()
            except asyncio.CancelledError:
                # A job cut off by shutdown is no error: what it held comes back when its lease expires.
                if not self._stopping:
                    raise

        self._scheduler.add_job(
            job,
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

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
