"""Runs account checks in the background: at once when asked (register, update, reconnect), and for
every account periodically, so a password changed at the provider is noticed and a recovered server too."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select
from sqlmodel import col

from gql_mail.models import Account
from gql_mail.runtime import Runtime
from gql_mail.services.accounts import check_account

log = logging.getLogger(__name__)


class AccountChecker:
    def __init__(self, rt: Runtime, *, concurrency: int = 8) -> None:
        self.rt = rt
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._limit = asyncio.Semaphore(concurrency)

    def request(self, account_id: str, *, periodic: bool = False) -> None:
        """Check this account soon (`periodic`: as the scheduler's round, see `check_account`).

        A check asked for while one runs is followed by one more: the running one may have read settings
        that changed since. A periodic request while one runs adds nothing: that one is as fresh."""
        if account_id in self._running:
            if not periodic:
                self._again.add(account_id)
            return
        self._running[account_id] = asyncio.create_task(
            self._check(account_id, periodic), name=f"check:{account_id}"
        )

    async def _check(self, account_id: str, periodic: bool) -> None:
        try:
            while True:
                self._again.discard(account_id)
                async with self._limit:
                    try:
                        await check_account(self.rt, account_id, periodic=periodic)
                    except Exception:
                        log.exception("checking account %s failed", account_id)
                if account_id not in self._again:
                    return
                periodic = False  # the next one was asked for
        finally:
            self._running.pop(account_id, None)

    async def check_all(self) -> None:
        """The scheduler's periodic `check_accounts` job: one round of checks of every account, awaited,
        so rounds never overlap (the job runs one instance at a time) and a caller sees the round done."""
        async with self.rt.db.read() as session:
            ids = (await session.execute(select(col(Account.id)))).scalars().all()
        for account_id in ids:
            self.request(account_id, periodic=True)
        checks = [task for account_id in ids if (task := self._running.get(account_id)) is not None]
        if checks:
            # wait, not gather: a cancelled round (shutdown) leaves the checks to `stop`.
            await asyncio.wait(checks)

    async def stop(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
