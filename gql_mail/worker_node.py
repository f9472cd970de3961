"""`gql-mail serve --workers-only`: the runtime and its workers without HTTP.

A PostgreSQL deployment scales the two kinds of work apart: API nodes (`serve --no-workers`) take requests
and write rows, worker nodes claim and deliver them. Both are the same program: this is the app's lifespan
(`app.running`) with a signal instead of uvicorn around it. SIGTERM or SIGINT stops it gracefully (what no
connection has started goes back to the queue, transactions in progress get the shutdown grace).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from gql_mail.app import build_runtime, running
from gql_mail.config import Settings

log = logging.getLogger(__name__)


async def run_workers(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT."""
    rt = build_runtime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with running(rt):
            log.info("workers running without HTTP (worker %s)", rt.worker_id)
            await stop.wait()
            log.info("stopping the workers")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("workers stopped")
