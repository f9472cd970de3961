"""The delivery worker: claims due messages and hands them to SMTP over reused connections.

Per account, a lane holds claimed messages and runs up to `max_concurrent_per_account` connections that
each send message after message; a global semaphore caps connections overall. The drain loop keeps
claiming while there is room, so a pre-filled queue streams through without pauses, and a submission's
wake-up starts a drain at once. Claims serve the accounts round robin (queue.py: every account's first
due message before any account's second, the next claim going on where the last one stopped), and no
account holds more than its share of the pipeline (`_account_share`): a claim skips accounts at their
share, so one account's backlog of thousands never delays another's message. A connection slot held open
for an account with nothing to send is given up as soon as another account wants one
(`_close_idle_connections`). Outcomes are recorded in batches (see `Batcher`).

Claims are kept by this process's heartbeat (workers/heartbeat.py), not by per-message leases. A graceful
stop gives back at once what no connection has started and lets the transactions in progress finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from gql_mail.mail.errors import MailError
from gql_mail.mail.smtp import SmtpConnection, SmtpSettings
from gql_mail.models import Account, AccountState
from gql_mail.queue import ClaimedMessage, RoundRobin, claim_messages, release_messages
from gql_mail.runtime import Runtime
from gql_mail.services import oauth2_tokens, smtp_leases
from gql_mail.services.accounts import record_account_state, smtp_settings
from gql_mail.services.delivery import Outcome, record_outcomes, record_unrecordable, recover_stalled
from gql_mail.services.oauth2_tokens import OAuth2TokenError
from gql_mail.services.pacing import UnpacedAccounts, admit, give_back_paused, stamp_sent
from gql_mail.workers.batcher import Batcher

log = logging.getLogger(__name__)


OUTCOME_GATHER_SECONDS = 0.025
# How long a connection whose lane ran dry stays open for the account's next message (only while other lanes
# have connection slots to spare). A steady trickle of submissions then reuses one logged-in connection
# instead of paying connect, EHLO, AUTH, QUIT and an account read for every message.
SMTP_IDLE_SECONDS = 1.0
# A capped account whose connections are all open on other nodes: its messages claimed here wait this long.
LEASE_WAIT = timedelta(seconds=2)
# After a claim of this many messages, the next one runs off the event loop (see `Database.write`).
BULK_CLAIM = 8


@dataclass
class Lane:
    account_id: str
    pending: deque[ClaimedMessage] = field(default_factory=deque)
    connections: int = 0
    # Set by the first connection that meets an authentication failure (see `_connect_failed`).
    auth_failed: bool = False
    # The settings version the lane's connections were opened with (see `record_account_state`).
    version: int | None = None
    # An OAuth2 account: connections log in with its current access token (services/oauth2_tokens.py).
    oauth2: bool = False
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
        # An account with half its share waiting in its lane (unsent) is left out of claims (one claim may
        # add a batch on top), and a drain waiting for it claims again once its lane is down to a quarter:
        # claiming after every single message would cost a statement per message. Counted in the lane, not
        # until outcomes are recorded: those lag by a batch, and the lane would run dry waiting for them.
        self._account_share = max(s.max_concurrent_per_account * 16, self._max_in_flight // 2)
        self._account_room = asyncio.Event()
        self._last_claim = 0
        # Where the next claim's round over accounts goes on (queue.py): each account in turn.
        self._turns = RoundRobin()
        self._slot_free = asyncio.Event()
        self._wanted = asyncio.Event()
        # Under a stream of outcomes, 25 ms of gathering makes a batch of tens instead of a few: a batch's
        # transaction costs about the same whatever its size (measured: 5 outcomes 2.4 ms, 20 outcomes 4 ms).
        # An outcome that can't be recorded even alone ends its message `failed` (INTERNAL) instead of
        # leaving it `sending` until this worker stops and then sending it again (see `record_unrecordable`).
        self._recorder: Batcher[Outcome] = Batcher(
            self._record, on_item_failed=self._unrecordable, gather_seconds=OUTCOME_GATHER_SECONDS
        )
        self._tasks: set[asyncio.Task[None]] = set()
        # Outcomes handed to the recorder and not yet written (see `_record_later`).
        self._recording: set[asyncio.Future[None]] = set()
        # Set while no drain runs (see `no_drain_running`).
        self._not_draining = asyncio.Event()
        self._not_draining.set()
        # While set, a connection whose lane is empty closes at once instead of waiting (see `idle`).
        self._no_idle_connections = False
        self._stopping = False
        # Accounts whose limits cap their connections below `max_concurrent_per_account` (services/pacing).
        self._connection_caps: dict[str, int] = {}
        # Admitted messages of paced accounts whose send-log rows await the end of their attempt.
        self._logged: set[str] = set()
        self._unpaced = UnpacedAccounts()

    def start(self) -> None:
        self._recorder.start()

    async def stop(self) -> None:
        """Graceful stop: what no connection has started goes back to the queue now (a restart or another
        node sends it at once, and nothing is sent twice); SMTP transactions in progress get
        `shutdown_grace_seconds` to finish and be recorded; what is still running then is cut off and comes
        back as stalled once this worker's heartbeat row is gone."""
        self._stopping = True
        self._no_idle_connections = True
        self._slot_free.set()
        self._account_room.set()
        # A drain in the middle of a claim finishes it and gives the rows back itself (see `drain`).
        await self._not_draining.wait()
        unstarted: list[ClaimedMessage] = []
        for lane in self._lanes.values():
            unstarted.extend(lane.pending)
            lane.pending.clear()
            lane.arrived.set()
        self._done(len(unstarted))
        try:
            await release_messages(self.rt, [m.id for m in unstarted])
        except Exception:
            log.exception("giving back %d unstarted messages failed", len(unstarted))
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.rt.settings.shutdown_grace_seconds)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._recorder.stop()

    def wake(self) -> None:
        self._wanted.set()
        self._account_room.set()  # a drain waiting for a busy account's room claims for the others now

    async def no_drain_running(self) -> None:
        """Return once no drain is claiming: a caller about to drain by hand lets a running one dispatch
        first (on PostgreSQL its own claim would skip the rows the running one has locked)."""
        await self._not_draining.wait()

    async def idle(self) -> None:
        """Wait until every claimed message has its outcome recorded (tests; Sent copies: `SentCopier`)."""
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
            while not self._stopping:
                self._wanted.clear()
                room = self._max_in_flight - self._in_flight
                if room < self._claim_at_least:
                    self._slot_free.clear()
                    await self._slot_free.wait()
                    continue
                limit = min(room, self.rt.settings.delivery_batch_size)
                busy = self._busy_accounts()
                # A busy queue's claims return many rows (with their bodies): off the event loop, so the
                # SMTP conversations in flight go on meanwhile; a trickle's are small and quick inline.
                claimed = await claim_messages(
                    self.rt, limit, turns=self._turns, bulk=self._last_claim >= BULK_CLAIM, busy=busy
                )
                self._last_claim = len(claimed)
                if self._stopping:
                    await release_messages(self.rt, [m.id for m in claimed])
                    return
                for message in await self._admit(claimed):
                    self._dispatch(message)
                if len(claimed) < limit and not self._turns.cut and not self._wanted.is_set():
                    if not busy:
                        return
                    # More may be due for the accounts left out: claim again once one has room (or a
                    # wake-up says something new arrived).
                    self._account_room.clear()
                    with contextlib.suppress(TimeoutError):  # bounded: a lane emptied some other way
                        await asyncio.wait_for(
                            self._account_room.wait(), self.rt.settings.poll_interval_seconds
                        )
        finally:
            self._not_draining.set()

    async def _admit(self, claimed: list[ClaimedMessage]) -> list[ClaimedMessage]:
        """What the accounts' limits let through now (services/pacing.py); the rest is back in the queue."""
        try:
            admission = await admit(self.rt, claimed, self._unpaced)
        except Exception:
            log.exception("pacing %d claimed messages failed; they go back to the queue", len(claimed))
            await release_messages(self.rt, [m.id for m in claimed])
            return []
        self._connection_caps.update(admission.max_connections)
        self._logged |= admission.logged
        return admission.messages

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _busy_accounts(self) -> list[str]:
        busy = self._account_share // 2
        return [lane.account_id for lane in self._lanes.values() if len(lane.pending) >= busy]

    def _dispatch(self, message: ClaimedMessage) -> None:
        self._in_flight += 1
        lane = self._lanes.get(message.account_id)
        if lane is None:
            lane = self._lanes[message.account_id] = Lane(message.account_id)
        lane.pending.append(message)
        lane.arrived.set()
        cap = min(
            self.rt.settings.max_concurrent_per_account,
            self._connection_caps.get(message.account_id, self.rt.settings.max_concurrent_per_account),
        )
        if lane.connections < cap and lane.connections < len(lane.pending):
            lane.connections += 1
            self._spawn(self._run_connection(lane), f"smtp:{lane.account_id}")

    def _done(self, count: int = 1) -> None:
        self._in_flight -= count
        self._slot_free.set()
        if count > 1:  # a lane given back or lost at once: it is not busy any more
            self._account_room.set()

    async def _account_settings(self, account_id: str) -> tuple[SmtpSettings, int, bool] | None:
        """The account's SMTP settings, their version and whether it logs in with OAuth2, or None when it
        is not CONNECTED (any more)."""
        async with self.rt.db.read() as session:
            account = await session.get(Account, account_id)
        if account is None or account.state != AccountState.CONNECTED:
            return None
        return smtp_settings(self.rt, account), account.version, account.oauth2_app_id is not None

    async def _run_connection(self, lane: Lane) -> None:
        try:
            if self._connections.locked():
                self._close_idle_connections()
            async with self._connections:
                cap = self._connection_caps.get(lane.account_id)
                lease = None if cap is None else await smtp_leases.take(self.rt, lane.account_id, cap)
                if cap is not None and lease is None:
                    # Every connection the account may have is open on other nodes: its messages wait
                    # there (or here a little later), unless another connection of this lane serves them.
                    if lane.connections == 1:
                        await self._release(lane, not_before=self.rt.clock.now() + LEASE_WAIT)
                    return
                try:
                    loaded = await self._account_settings(lane.account_id)
                    if loaded is None:
                        await self._release(lane)
                        return
                    settings, lane.version, lane.oauth2 = loaded
                    await self._send_all(lane, settings)
                finally:
                    if lease is not None:
                        await smtp_leases.give_back(self.rt, lane.account_id, lease)
        except Exception:
            log.exception("delivery lane for %s crashed; its messages go back to the queue", lane.account_id)
            lost = list(lane.pending)
            lane.pending.clear()
            self._done(len(lost))
            self._spawn(self._recover([m.id for m in lost]), f"recover:{lane.account_id}")
        finally:
            lane.connections -= 1
            if lane.connections == 0:
                if lane.pending:
                    # Messages dispatched while this connection was closing: serve them.
                    lane.connections += 1
                    self._spawn(self._run_connection(lane), f"smtp:{lane.account_id}")
                else:
                    self._lanes.pop(lane.account_id, None)

    def _close_idle_connections(self) -> None:
        """A lane needs a connection slot and none is free: connections kept open for an account with
        nothing to send (`_wait_for_more`) close now and give theirs up, so no slot idles while an account
        is below its own connection cap."""
        for lane in self._lanes.values():
            if not lane.pending:
                lane.arrived.set()

    async def _release(self, lane: Lane, not_before: datetime | None = None) -> None:
        released = list(lane.pending)
        lane.pending.clear()
        self._logged.difference_update(m.id for m in released)
        await release_messages(self.rt, [m.id for m in released], not_before=not_before)
        self._done(len(released))

    async def _recover(self, ids: list[str]) -> None:
        """Claims this worker can no longer account for (a crashed lane, an outcome that could not be
        recorded): back to the queue as stalled, or failed when they stalled too often. Without this they
        would stay `sending` for as long as this process lives, its heartbeat keeping them."""
        if not ids:
            return
        try:
            await recover_stalled(self.rt, ids)
        except Exception:
            log.exception("handing back %d messages failed; they come back when this worker stops", len(ids))

    async def _send_all(self, lane: Lane, settings: SmtpSettings) -> None:
        connection: SmtpConnection | None = None
        metrics = self.rt.metrics
        try:
            while lane.pending or (connection is not None and await self._wait_for_more(lane, connection)):
                if not lane.pending:
                    continue
                message = lane.pending.popleft()
                if len(lane.pending) == self._account_share // 4:
                    self._account_room.set()
                if connection is None or not connection.usable:
                    if connection is not None:
                        metrics.smtp_connections.dec()
                        await connection.__aexit__(None, None, None)
                        connection = None
                    try:
                        connection = await self._connect(lane, settings)
                    except MailError as exc:
                        await self._connect_failed(lane, message, exc)
                        return
                    metrics.smtp_connections.inc()
                started = time.perf_counter()
                try:
                    result = await connection.send(message.envelope_from, message.envelope_to, message.raw)
                except MailError as exc:
                    duration_ms = self._timed(started)
                    if exc.throttle is not None:
                        await self._throttled(lane, message, exc, duration_ms)
                        return
                    self._record_later(Outcome(message, error=exc, duration_ms=duration_ms))
                else:
                    self._record_later(Outcome(message, result=result, duration_ms=self._timed(started)))
        finally:
            if connection is not None:
                metrics.smtp_connections.dec()
                await connection.__aexit__(None, None, None)

    async def _connect(self, lane: Lane, settings: SmtpSettings) -> SmtpConnection:
        """A logged-in connection; an OAuth2 account's with a valid token (refreshed once more when the
        server refuses it)."""
        if not lane.oauth2:
            return await SmtpConnection(settings).__aenter__()

        async def connect(token: str) -> SmtpConnection:
            return await SmtpConnection(replace(settings, access_token=token)).__aenter__()

        return await oauth2_tokens.with_token(self.rt, lane.account_id, connect)

    def _timed(self, started: float) -> int:
        """An SMTP transaction's wall time since `started` (a `perf_counter` reading), observed by the
        transaction histogram and returned in ms for its attempt's record: a measurement of the real
        network, not of the injectable clock."""
        elapsed = time.perf_counter() - started
        self.rt.metrics.smtp_transaction.observe(elapsed)
        return round(elapsed * 1000)

    async def _wait_for_more(self, lane: Lane, connection: SmtpConnection) -> bool:
        """Keep a usable connection whose lane ran dry open a while for the account's next message. False:
        close it (nothing came, the connection broke, or another lane needs the slot: see
        `_close_idle_connections`)."""
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
        their messages too (found by tests/faults: up to `max_concurrent_per_account` were burned).

        No OAuth2 access token (`OAuth2TokenError`): nothing was sent and no attempt is spent. The provider
        refused the grant: the account moves to AUTHENTICATION_ERROR and its messages wait for new tokens.
        A transient refresh failure: the messages wait for the refresh's backoff, the account's state
        unchanged."""
        if error.throttle is not None:
            await self._throttled(lane, first, error, None)
            return
        if isinstance(error, OAuth2TokenError):
            lane.pending.appendleft(first)
            if error.auth_failure and not lane.auth_failed:
                lane.auth_failed = True
                await record_account_state(self.rt, lane.account_id, error, version=lane.version)
            later = None
            if not error.auth_failure:
                later = error.retry_at or self.rt.clock.now() + timedelta(
                    seconds=self.rt.settings.retry_base_seconds
                )
            await self._release(lane, not_before=later)
            return
        if error.auth_failure:
            if lane.auth_failed:
                lane.pending.appendleft(first)
            else:
                lane.auth_failed = True
                await self._finish(Outcome(first, error=error))
                # Only against the settings this lane tried: an update meanwhile is checked afresh.
                await record_account_state(self.rt, lane.account_id, error, version=lane.version)
            await self._release(lane)
            return
        failed = [first, *lane.pending]
        lane.pending.clear()
        await asyncio.gather(*(self._finish(Outcome(m, error=error)) for m in failed))

    async def _throttled(
        self, lane: Lane, message: ClaimedMessage, error: MailError, duration_ms: int | None
    ) -> None:
        """The server throttles the account: the message's outcome pauses it (services/pacing.py), and once
        that is written, the lane's other messages go back untried; their next claim finds the pause."""
        await self._finish(Outcome(message, error=error, duration_ms=duration_ms))
        self._unpaced.forget(lane.account_id)  # paused now: the next claims must see it
        untried = list(lane.pending)
        lane.pending.clear()
        ids = [m.id for m in untried]
        try:
            await give_back_paused(self.rt, lane.account_id, ids)
        except Exception:
            log.exception("giving back %d messages of paused %s failed", len(ids), lane.account_id)
            self._spawn(self._recover(ids), f"recover:{lane.account_id}")
        finally:
            self._done(len(untried))

    async def _finish(self, outcome: Outcome) -> None:
        """Record the outcome and wait until it is written (a failure is `_recorded`'s to handle)."""
        await asyncio.wait([self._record_later(outcome)])

    def _record_later(self, outcome: Outcome) -> asyncio.Future[None]:
        """Hand the outcome to the recorder without a task of its own (a task per message was a visible
        share of delivering one); the bookkeeping runs when its batch is written."""
        future = self._recorder.submit(outcome)
        self._recording.add(future)
        future.add_done_callback(lambda done: self._recorded(outcome, done))
        return future

    def _recorded(self, outcome: Outcome, future: asyncio.Future[None]) -> None:
        self._recording.discard(future)
        self._done()
        if future.cancelled():
            return
        if (error := future.exception()) is not None:
            log.error("recording the outcome of %s failed", outcome.message.id, exc_info=error)
            self._spawn(self._recover([outcome.message.id]), f"recover:{outcome.message.id}")
            return

    async def _record(self, outcomes: Sequence[Outcome]) -> None:
        await record_outcomes(self.rt, outcomes)
        if self._logged:
            await self._stamp([o.message.id for o in outcomes if o.message.id in self._logged])
        if any(o.result is not None and o.message.copy_to_sent for o in outcomes):
            self.rt.wake.sent_copy()  # their Sent copies are recorded as due now

    async def _stamp(self, ids: list[str]) -> None:
        """Paced messages' send-log rows to the end of their attempt (services/pacing.py). Not the outcomes'
        business: a failure here leaves the rows at admission time (counted early, never too few)."""
        if not ids:
            return
        self._logged.difference_update(ids)
        try:
            await stamp_sent(self.rt, ids)
        except Exception:
            log.exception("stamping %d paced messages' send time failed", len(ids))

    async def _unrecordable(self, outcome: Outcome, error: Exception) -> None:
        await record_unrecordable(self.rt, outcome, error)
