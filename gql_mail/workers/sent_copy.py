"""The Sent-folder copier: appends sent messages to their account's Sent folder, from the obligations that
recording `sent` wrote (outbox rows with copy_status 'pending').

The obligation is in the database, not in this process: a copy cut off by a crash or an IMAP outage is
claimed again when it is due (see `queue.claim_copies`), and its outcome is recorded by
`services.delivery.record_copy`. Each copy opens its own short IMAP session, outside any transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import select
from sqlmodel import col

from gql_mail.mail.errors import MailError
from gql_mail.mail.imap import ImapSettings, append_to_sent
from gql_mail.models import Account
from gql_mail.queue import ClaimedCopy, claim_copies, release_copies
from gql_mail.runtime import Runtime
from gql_mail.services import oauth2_tokens
from gql_mail.services.accounts import imap_settings
from gql_mail.services.delivery import abandon_copy, record_copy

log = logging.getLogger(__name__)

NO_IMAP = "No Sent copy: IMAP is disabled for this account"


class SentCopier:
    def __init__(self, rt: Runtime, *, concurrency: int = 8, batch: int = 50) -> None:
        self.rt = rt
        self._limit = asyncio.Semaphore(concurrency)
        self._batch = batch
        self._wanted = asyncio.Event()
        # One pass at a time: a test (or a wake-up) that drains while a scheduled pass runs waits for it, so a
        # drain that returns has seen every copy that was due when it was called to its outcome.
        self._draining = asyncio.Lock()
        self._drains: set[asyncio.Task[None]] = set()
        # Claimed and without a recorded outcome; `_started` are those whose APPEND began.
        self._held: set[str] = set()
        self._started: set[str] = set()

    def wake(self) -> None:
        self._wanted.set()

    async def stop(self) -> None:
        """Cut off running passes and give what they held back, due at once, so a restart copies it
        without waiting for this worker to be found dead."""
        tasks = list(self._drains)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tried = self._held & self._started
        untried = self._held - tried
        self._held.clear()
        self._started.clear()
        try:
            await release_copies(self.rt, sorted(untried))
            await release_copies(self.rt, sorted(tried), tried=True)
        except Exception:
            log.exception(
                "giving back %d Sent copies failed; they come back when this worker is found dead",
                len(tried | untried),
            )

    async def drain(self) -> None:
        """The scheduler's `copy_to_sent` job: copy until nothing is due."""
        # The pass runs in a task of its own, so `stop` cancels it and never its caller's task.
        task = asyncio.create_task(self._drain(), name="copy-to-sent")
        self._drains.add(task)
        try:
            await task
        finally:
            self._drains.discard(task)

    async def _drain(self) -> None:
        async with self._draining:
            if self._held:
                # Copies whose outcome could not be recorded (the database failed us): due again now.
                await release_copies(self.rt, sorted(self._held), tried=True)
                self._held.clear()
                self._started.clear()
            while True:
                self._wanted.clear()
                claimed = await claim_copies(self.rt, self._batch)
                self._held.update(c.id for c in claimed)
                if claimed:
                    await self._copy_all(claimed)
                elif not self._wanted.is_set():
                    return

    async def _copy_all(self, claimed: Sequence[ClaimedCopy]) -> None:
        account_ids = {c.account_id for c in claimed}
        async with self.rt.db.read() as session:
            accounts = {
                a.id: a
                for a in (
                    await session.execute(select(Account).where(col(Account.id).in_(account_ids)))
                ).scalars()
            }
        await asyncio.gather(*(self._copy(c, accounts.get(c.account_id)) for c in claimed))

    async def _copy(self, copy: ClaimedCopy, account: Account | None) -> None:
        if account is not None:  # else deleted, with its messages: no row is left to record anything on
            try:
                settings = imap_settings(self.rt, account)
                if settings is None:
                    await abandon_copy(self.rt, copy, NO_IMAP)
                else:
                    async with self._limit:
                        self._started.add(copy.id)
                        folder, error = await self._append_as(
                            account, copy, settings, copy.sent_mail_path or account.sent_mail_path
                        )
                    await record_copy(self.rt, copy, folder, error)
            except Exception:
                log.exception(
                    "recording the Sent copy of %s failed; it is due again at the next pass", copy.id
                )
                return  # still held: the next pass gives it back
        self._held.discard(copy.id)
        self._started.discard(copy.id)

    async def _append_as(
        self, account: Account, copy: ClaimedCopy, settings: ImapSettings, folder: str | None
    ) -> tuple[str | None, MailError | None]:
        """The copy, logged in as the account: an OAuth2 account with its current access token (refreshed
        once more when the server refuses it; a refresh that fails is the copy's failure)."""
        if account.oauth2_app_id is None:
            return await self._append(copy, settings, folder)

        async def append(token: str) -> tuple[str | None, MailError | None]:
            done, error = await self._append(copy, replace(settings, access_token=token), folder)
            if error is not None and error.auth_failure:
                raise error  # with_token refreshes once on a refused login
            return done, error

        try:
            return await oauth2_tokens.with_token(self.rt, account.id, append)
        except MailError as exc:
            return None, exc

    @staticmethod
    async def _append(
        copy: ClaimedCopy, settings: ImapSettings, folder: str | None
    ) -> tuple[str | None, MailError | None]:
        try:
            return await append_to_sent(settings, copy.raw, folder), None
        except MailError as exc:
            log.warning("Sent copy of %s failed (try %d): %s", copy.id, copy.copy_attempts, exc)
            return None, exc
