"""This process's heartbeat: the one write that keeps every claim it holds.

A claim names its worker; `queue.requeue_stalled` hands back the rows of any worker whose heartbeat is older
than the lease. The beat runs on a timer of its own, so a message may wait in a lane as long as it likes
(a slow server, a long backlog) without its claim lapsing, and a process that dies (`kill -9`, a lost
machine) has its work picked up by another process, or by itself restarted, within a lease plus a beat. A
graceful stop deletes the row at once, so whatever the stopping process still held comes back immediately.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any, cast

from sqlalchemy import CursorResult, delete, insert, update

from gql_mail.queue import WORKER
from gql_mail.runtime import Runtime

log = logging.getLogger(__name__)


def beat_interval(rt: Runtime) -> float:
    """A few beats per lease: one late or failed beat (a busy database) does not make a live worker dead."""
    return rt.settings.lease_seconds / 5


class Heartbeat:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Register this worker before it claims anything (a claim by an unregistered worker looks dead)."""
        await self._register()
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            async with self.rt.db.write() as session:
                await session.execute(delete(WORKER).where(WORKER.c.id == self.rt.worker_id))
        except Exception:
            log.exception(
                "could not remove worker %s; its claims come back after the lease", self.rt.worker_id
            )

    async def _register(self) -> None:
        now = self.rt.clock.now()
        async with self.rt.db.write() as session:
            await session.execute(
                insert(WORKER).values(
                    id=self.rt.worker_id,
                    host=socket.gethostname()[:256],
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                )
            )

    async def beat(self) -> None:
        """Write the heartbeat now. A worker found missing (declared dead after a stall longer than the lease,
        its claims handed back) registers again: what it still holds may be sent twice, which is the
        at-least-once promise among messages in flight."""
        async with self.rt.db.write() as session:
            found = await session.execute(
                update(WORKER)
                .where(WORKER.c.id == self.rt.worker_id)
                .values(heartbeat_at=self.rt.clock.now())
                .execution_options(synchronize_session=False)
            )
        if not cast(CursorResult[Any], found).rowcount:
            log.warning(
                "worker %s was declared dead (no heartbeat for a lease); registering again", self.rt.worker_id
            )
            await self._register()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(beat_interval(self.rt))
            try:
                await self.beat()
            except Exception:
                log.exception("heartbeat of worker %s failed", self.rt.worker_id)
