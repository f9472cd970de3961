"""The delivery worker: claims due messages and hands them to SMTP over reused connections.

Per account, a lane holds claimed messages and runs up to `max_concurrent_per_account` connections that
each send message after message; a global semaphore caps connections overall. The drain loop keeps
claiming while there is room, so a pre-filled queue streams through without pauses, and a submission's
wake-up starts a drain at once. Outcomes are recorded in batches (see `Batcher`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from gql_mail.mail.errors import MailError
from gql_mail.mail.imap import append_to_sent
from gql_mail.mail.smtp import SmtpConnection, SmtpSettings
from gql_mail.models import Account, AccountState
from gql_mail.queue import ClaimedMessage, claim_messages, release_messages, renew_message_leases
from gql_mail.runtime import Runtime
from gql_mail.services.accounts import imap_settings, record_account_state, smtp_settings
from gql_mail.services.delivery import Outcome, record_copy, record_outcomes, record_unrecordable
from gql_mail.workers.batcher import Batcher

log = logging.getLogger(__name__)

OUTCOME_GATHER_SECONDS = 0.025
# How long a connection whose lane ran dry stays open for the account's next message (only while other lanes
# have connection slots to spare). A steady trickle of submissions then reuses one logged-in connection
# instead of paying connect, EHLO, AUTH, QUIT and an account read for every message.
SMTP_IDLE_SECONDS = 1.0
# After a claim of this many messages, the next one runs off the event loop (see `Database.write`).
BULK_CLAIM = 8


@dataclass
class Lane:
    account_id: str
    pending: deque[ClaimedMessage] = field(default_factory=deque)
    connections: int = 0
    # Set by the first connection that meets an authentication failure (see `_connect_failed`).
    auth_failed: bool = False
    # Set when a message is added, for a connection that waits for more (`_wait_for_more`).
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class DeliveryWorker:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        s = rt.settings
        self._lanes: dict[str, Lane] = {}
        self._connections = asyncio.Semaphore(s.max_concurrent_deliveries)
        self._max_in_flight = max(s.delivery_batch_size, s.max_concurrent_deliveries * 8)
        # A full pipeline claims again only once this much room is free: claiming each freed slot on its
        # own made most claims one or two rows long, and a claim's cost is per statement, not per row.
        self._claim_at_least = max(1, min(s.delivery_batch_size, self._max_in_flight) // 2)
        self._in_flight = 0
        self._last_claim = 0
        self._slot_free = asyncio.Event()
        self._wanted = asyncio.Event()
        # Under a stream of outcomes, 25 ms of gathering makes a batch of tens instead of a few: a batch's
        # transaction costs about the same whatever its size (measured: 5 outcomes 2.4 ms, 20 outcomes 4 ms).
        # An outcome that can't be recorded even alone ends its message `failed` (INTERNAL) instead of
        # leaving it `sending`, to be sent again once its lease lapses (see `record_unrecordable`).
        self._recorder: Batcher[Outcome] = Batcher(
            self._record, on_item_failed=self._unrecordable, gather_seconds=OUTCOME_GATHER_SECONDS
        )
        # Messages ended by `_unrecordable` whose futures are still to be seen by `_recorded`.
        self._ended_unrecorded: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Outcomes handed to the recorder and not yet written (see `_record_later`).
        self._recording: set[asyncio.Future[None]] = set()
        # Set while no drain runs (see `no_drain_running`).
        self._not_draining = asyncio.Event()
        self._not_draining.set()
        # Claimed and not yet recorded: their leases are renewed while they wait in a lane (_renew_leases).
        self._held: set[str] = set()
        self._renewer: asyncio.Task[None] | None = None
        # While set, a connection whose lane is empty closes at once instead of waiting (see `idle`).
        self._no_idle_connections = False

    def start(self) -> None:
        self._recorder.start()
        self._renewer = asyncio.create_task(self._renew_leases(), name="renew-leases")

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._recorder.stop()

    def wake(self) -> None:
        self._wanted.set()

    async def no_drain_running(self) -> None:
        """Return once no drain is claiming: a caller about to drain by hand lets a running one dispatch
        first (on PostgreSQL its own claim would skip the rows the running one has locked)."""
        await self._not_draining.wait()

    async def idle(self) -> None:
        """Wait until every claimed message has its outcome recorded and its Sent copy made (tests)."""
        self._no_idle_connections = True
        try:
            while self._tasks or self._recording:
                for lane in self._lanes.values():
                    lane.arrived.set()
                await asyncio.wait(self._tasks | self._recording)
        finally:
            self._no_idle_connections = False

    async def drain(self) -> None:
        """Claim and dispatch until nothing is due (the scheduler's `poll_due_messages` job)."""
        self._not_draining.clear()
        try:
            while True:
                self._wanted.clear()
                room = self._max_in_flight - self._in_flight
                if room < self._claim_at_least:
                    self._slot_free.clear()
                    await self._slot_free.wait()
                    continue
                limit = min(room, self.rt.settings.delivery_batch_size)
                # A busy queue's claims return many rows (with their bodies): off the event loop, so the
                # SMTP conversations in flight go on meanwhile; a trickle's are small and quick inline.
                claimed = await claim_messages(self.rt, limit, bulk=self._last_claim >= BULK_CLAIM)
                self._last_claim = len(claimed)
                for message in claimed:
                    self._dispatch(message)
                if len(claimed) < limit and not self._wanted.is_set():
                    return
        finally:
            self._not_draining.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatch(self, message: ClaimedMessage) -> None:
        self._in_flight += 1
        self._held.add(message.id)
        lane = self._lanes.get(message.account_id)
        if lane is None:
            lane = self._lanes[message.account_id] = Lane(message.account_id)
        lane.pending.append(message)
        lane.arrived.set()
        if lane.connections < self.rt.settings.max_concurrent_per_account and lane.connections < len(
            lane.pending
        ):
            lane.connections += 1
            self._spawn(self._run_connection(lane), f"smtp:{lane.account_id}")

    def _done(self, count: int = 1) -> None:
        self._in_flight -= count
        self._slot_free.set()

    async def _renew_leases(self) -> None:
        """Keep the lease of every message this worker holds fresh. A claimed message can wait in its lane
        longer than a lease (a slow server, many messages for one account); without renewal
        `reclaim_expired_leases` hands it back to the queue while it waits, and this same process sends it
        twice (found by tests/faults/test_kill.py). Only a dead worker's leases may expire."""
        while True:
            await asyncio.sleep(self.rt.settings.lease_seconds / 3)
            if self._held:
                try:
                    await renew_message_leases(self.rt, list(self._held))
                except Exception:
                    log.exception("renewing the leases of %d messages failed", len(self._held))

    async def _account_settings(self, account_id: str) -> tuple[SmtpSettings, Account] | None:
        async with self.rt.db.read() as session:
            account = await session.get(Account, account_id)
        if account is None or account.state != AccountState.CONNECTED:
            return None
        return smtp_settings(self.rt, account), account

    async def _run_connection(self, lane: Lane) -> None:
        try:
            async with self._connections:
                loaded = await self._account_settings(lane.account_id)
                if loaded is None:
                    await self._release(lane)
                    return
                settings, account = loaded
                await self._send_all(lane, settings, account)
        except Exception:
            log.exception(
                "delivery lane for %s crashed; its messages come back when their lease expires",
                lane.account_id,
            )
            self._held.difference_update(m.id for m in lane.pending)
            self._done(len(lane.pending))
            lane.pending.clear()
        finally:
            lane.connections -= 1
            if lane.connections == 0:
                if lane.pending:
                    # Messages dispatched while this connection was closing: serve them.
                    lane.connections += 1
                    self._spawn(self._run_connection(lane), f"smtp:{lane.account_id}")
                else:
                    self._lanes.pop(lane.account_id, None)

    async def _release(self, lane: Lane) -> None:
        ids = [m.id for m in lane.pending]
        lane.pending.clear()
        self._held.difference_update(ids)
        await release_messages(self.rt, ids)
        self._done(len(ids))

    async def _send_all(self, lane: Lane, settings: SmtpSettings, account: Account) -> None:
        connection: SmtpConnection | None = None
        try:
            while lane.pending or (connection is not None and await self._wait_for_more(lane, connection)):
                if not lane.pending:
                    continue
                message = lane.pending.popleft()
                if connection is None or not connection.usable:
                    if connection is not None:
                        await connection.__aexit__(None, None, None)
                        connection = None
                    try:
                        connection = await SmtpConnection(settings).__aenter__()
                    except MailError as exc:
                        await self._connect_failed(lane, message, exc)
                        return
                try:
                    result = await connection.send(message.envelope_from, message.envelope_to, message.raw)
                except MailError as exc:
                    self._record_later(Outcome(message, error=exc), account)
                else:
                    self._record_later(Outcome(message, result=result), account)
        finally:
            if connection is not None:
                await connection.__aexit__(None, None, None)

    async def _wait_for_more(self, lane: Lane, connection: SmtpConnection) -> bool:
        """Keep a usable connection whose lane ran dry open a while for the account's next message. False:
        close it (nothing came, the connection broke, or other lanes need the slot)."""
        if self._no_idle_connections or self._connections.locked() or not connection.usable:
            return False
        lane.arrived.clear()
        try:
            await asyncio.wait_for(lane.arrived.wait(), SMTP_IDLE_SECONDS)
        except TimeoutError:
            pass
        return bool(lane.pending) and connection.usable and not self._no_idle_connections

    async def _connect_failed(self, lane: Lane, first: ClaimedMessage, error: MailError) -> None:
        """No connection. A transient error: every message waiting in this lane has had a failed attempt.

        An authentication failure (535) means the account is broken: the one message that met it first
        fails with the server's reply (messageFailed, as EmailEngine reports it), the account leaves
        CONNECTED, and everything else is given back untried to wait until the account is fixed. The
        lane's other connections meet the same 535 at the same moment; the flag keeps them from failing
        their messages too (found by tests/faults: up to `max_concurrent_per_account` were burned)."""
        if error.auth_failure:
            if lane.auth_failed:
                lane.pending.appendleft(first)
            else:
                lane.auth_failed = True
                await self._finish(Outcome(first, error=error), None)
                await record_account_state(self.rt, lane.account_id, error)
            await self._release(lane)
            return
        failed = [first, *lane.pending]
        lane.pending.clear()
        await asyncio.gather(*(self._finish(Outcome(m, error=error), None) for m in failed))

    async def _finish(self, outcome: Outcome, account: Account | None) -> None:
        """Record the outcome and wait until it is written (a failure is `_recorded`'s to handle)."""
        await asyncio.wait([self._record_later(outcome, account)])

    def _record_later(self, outcome: Outcome, account: Account | None) -> asyncio.Future[None]:
        """Hand the outcome to the recorder without a task of its own (a task per message was a visible
        share of delivering one); the bookkeeping runs when its batch is written."""
        future = self._recorder.submit(outcome)
        self._recording.add(future)
        future.add_done_callback(lambda done: self._recorded(outcome, account, done))
        return future

    def _recorded(self, outcome: Outcome, account: Account | None, future: asyncio.Future[None]) -> None:
        self._recording.discard(future)
        self._held.discard(outcome.message.id)
        self._done()
        if future.cancelled():
            return
        if (error := future.exception()) is not None:
            # Neither recorded nor ended (the database refuses every write): the lease is no longer renewed,
            # so the message is tried again once it expires.
            log.error("recording the outcome of %s failed", outcome.message.id, exc_info=error)
            return
        if outcome.message.id in self._ended_unrecorded:
            self._ended_unrecorded.discard(outcome.message.id)
            return  # ended `failed` by `_unrecordable`: no Sent copy of a message reported as failed
        if outcome.result is not None and outcome.message.copy_to_sent and account is not None:
            self._spawn(self._copy_to_sent(outcome.message, account), f"copy:{outcome.message.id}")

    async def _copy_to_sent(self, message: ClaimedMessage, account: Account) -> None:
        settings = imap_settings(self.rt, account)
        if settings is None:
            return
        try:
            folder = await append_to_sent(settings, message.raw, account.sent_mail_path)
        except MailError as exc:
            log.warning("copy of %s to the Sent folder failed: %s", message.id, exc)
            await record_copy(self.rt, message, None, exc)
        else:
            await record_copy(self.rt, message, folder, None)

    async def _record(self, outcomes: Sequence[Outcome]) -> None:
        await record_outcomes(self.rt, outcomes)

    async def _unrecordable(self, outcome: Outcome, error: Exception) -> None:
        await record_unrecordable(self.rt, outcome, error)
        self._ended_unrecorded.add(outcome.message.id)
