"""Every query that claims or releases work, in one place.

A claim is one statement: `UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING …`. SQLite runs it under its
single writer lock; PostgreSQL adds `FOR UPDATE SKIP LOCKED` to the inner select, so workers in many
processes never take the same row. Both read the due rows through the (status, next_attempt_at) index and
never scan the queue. A claim names its worker (`claimed_by`); a worker that stops beating its heartbeat
(see workers/heartbeat.py) for longer than the lease has its rows handed back by `requeue_stalled`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Result,
    and_,
    bindparam,
    case,
    delete,
    exists,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from gql_mail.clock import utc
from gql_mail.models import (
    Account,
    AccountState,
    CopyStatus,
    MessageStatus,
    OutboxMessage,
    SmtpLease,
    WebhookDelivery,
    Worker,
    table,
)
from gql_mail.runtime import Runtime

OUTBOX = table(OutboxMessage)
ACCOUNT = table(Account)
DELIVERY = table(WebhookDelivery)
WORKER = table(Worker)
LEASE = table(SmtpLease)


class ClaimedMessage(NamedTuple):
    """A tuple, not a dataclass: a claim makes hundreds of them per second, straight from its rows."""

    id: str
    account_id: str
    message_id: str
    envelope_from: str
    envelope_to: tuple[str, ...]
    raw: bytes
    attempts_made: int
    attempts: int
    copy_to_sent: bool
    # When the message was to go: its submission, or its sendAt when later (delivery latency counts from it).
    due_from: datetime | None = None


def _due_from(created_at: datetime | None, send_at: datetime | None) -> datetime | None:
    moments = [utc(moment) for moment in (created_at, send_at) if moment is not None]
    return max(moments) if moments else None


@dataclass(frozen=True)
class ClaimedDelivery:
    seq: int
    id: str
    webhook_id: str
    event: str
    body: bytes
    attempts_made: int
    created_at: datetime  # when the event was staged: EmailEngine's `X-EE-Wh-Queued-Time` counts from it


def still(status_column: ColumnElement[str], status: str) -> ColumnElement[bool]:
    """`status_column = status`, for a statement that also picks rows by primary key (`id IN (…)`).

    Written as `status || '' = …` so that SQLite's planner, which has no statistics, cannot use the
    (status, …) index for it: given both, it chose that index and read every row in the status to find
    the few named ids (2 ms for 5 ids among 3,000 messages being sent, per batch of outcomes). PostgreSQL
    plans by its statistics and finds the ids by primary key either way."""
    return (status_column + "") == status


def _rowcount(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)


def alive_since(rt: Runtime, now: datetime) -> datetime:
    """Workers whose last heartbeat is older than this are dead: their claims go back to the queue."""
    return now - timedelta(seconds=rt.settings.lease_seconds)


# -- the message claim: round robin over accounts ---------------------------------------------------------
# A claim first walks the accounts that have queued messages, in account-id order from where the last claim
# stopped (`RoundRobin.after`), through the partial index `ix_outbox_queued` (account_id, next_attempt_at
# WHERE status = 'queued'): one index seek per account, so idle accounts and a million sent messages in
# retention cost nothing. From each walked account that is CONNECTED and not `busy` it then takes up to
# `per_account` due messages (one seek in the same index, stopping there: a million-row backlog costs its
# account `per_account` rows) and numbers them 1, 2 … (`turn`); it keeps the `limit` lowest (turn, due
# time): every account's first message before any account's second. With a hundred accounts each holding a
# thousand due messages, a claim of a hundred takes one message of each, and the next claim walks on from
# the account after the last one walked. (Oldest-due-first over all messages, the claim before this one,
# served an account's whole backlog before a newer message of another account.)
#
# Written as SQL: the walk is a recursive CTE, and `status = 'queued'` must be literal for SQLite and
# PostgreSQL to use the partial index. SQLite has no LATERAL, so each account's seek is a subquery in the
# join condition (`o.rowid IN (…)`), which it runs once per account and meets by rowid (the index holds
# it). PostgreSQL runs the seek LATERAL and locks what it picks (`FOR UPDATE SKIP LOCKED`), so workers in
# other processes take other rows.

# `{queued}` is literal in the SQL: a bound value would keep SQLite and PostgreSQL from using the partial
# index. `{indexed}`: SQLite's planner, which has no statistics, took the (status, next_attempt_at) index for
# `status = 'queued'` and sorted every queued row at each step of the walk (11 s among 100,000), so SQLite is
# told the index by name.
_WALK = (
    "WITH RECURSIVE walk(account_id) AS ("
    "SELECT (SELECT q.account_id FROM outbox_message q{indexed} WHERE q.status = '{queued}' "
    "AND q.account_id > :after ORDER BY q.account_id LIMIT 1) "
    "UNION ALL SELECT (SELECT q.account_id FROM outbox_message q{indexed} WHERE q.status = '{queued}' "
    "AND q.account_id > walk.account_id ORDER BY q.account_id LIMIT 1) FROM walk "
    "WHERE walk.account_id IS NOT NULL{inner_limit}) "
    "SELECT account_id FROM walk WHERE account_id IS NOT NULL{outer_limit}"
)
_DUE = (
    "FROM outbox_message d{indexed} WHERE d.account_id = a.id AND d.status = '{queued}' "
    # Never false for a queued message (one with no attempt left fails instead); a guard, so that no path
    # can make a claim exceed the budget.
    "AND d.next_attempt_at <= :now AND d.attempts_made < d.attempts "
    "ORDER BY d.next_attempt_at LIMIT :per_account"
)
_USABLE = "a.id IN :walked AND a.state = '{connected}' AND a.id NOT IN :busy"
_TURN = "row_number() OVER (PARTITION BY o.account_id ORDER BY o.next_attempt_at) AS turn"
# Each turn in the walk's order: the accounts after `:start` (where the walk began), then those it came
# round to. A claim its limit cuts short serves a prefix of the walk, and the next one goes on from there.
_ROUND_ORDER = "ORDER BY turn, account <= :start, account LIMIT :limit"
# The attempt is counted here, when it is claimed: whatever happens next (a crash, an outcome that cannot be
# recorded), the message is not sent more often than its budget.
_CLAIM_SET = (
    "UPDATE outbox_message SET status = '{sending}', claimed_by = :worker, "
    "attempts_made = attempts_made + 1, updated_at = :now "
)
_CLAIM_SQLITE_SQL = (
    _CLAIM_SET
    + f"WHERE rowid IN (SELECT picked FROM (SELECT o.rowid AS picked, a.id AS account, {_TURN} "
    + f"FROM account a JOIN outbox_message o ON o.rowid IN (SELECT d.rowid {_DUE}) WHERE {_USABLE}) "
    + f"{_ROUND_ORDER})"
)
_CLAIM_POSTGRESQL_SQL = (
    _CLAIM_SET
    + f"WHERE id IN (SELECT picked FROM (SELECT o.id AS picked, a.id AS account, {_TURN} "
    + f"FROM account a CROSS JOIN LATERAL (SELECT d.id, d.account_id, d.next_attempt_at {_DUE} "
    + f"FOR UPDATE OF d SKIP LOCKED) o WHERE {_USABLE}) turns {_ROUND_ORDER})"
)


def _sql(template: str, *, sqlite: bool, **extra: str) -> str:
    return template.format(
        queued=MessageStatus.QUEUED.value,
        sending=MessageStatus.SENDING.value,
        connected=AccountState.CONNECTED.value,
        indexed=" INDEXED BY ix_outbox_queued" if sqlite else "",
        **extra,
    )


# SQLite bounds a recursive CTE by its own LIMIT; PostgreSQL allows none there and stops the recursion when
# the outer LIMIT has its rows.
_WALK_SQLITE = text(_sql(_WALK, sqlite=True, inner_limit=" LIMIT :accounts + 1", outer_limit=""))
_WALK_POSTGRESQL = text(_sql(_WALK, sqlite=False, inner_limit="", outer_limit=" LIMIT :accounts"))


def _claim_statement(sql: str) -> Any:
    # Built once: building a statement cost more than a small claim's SQL.
    returning = (
        OUTBOX.c.id,
        OUTBOX.c.account_id,
        OUTBOX.c.message_id,
        OUTBOX.c.envelope_from,
        OUTBOX.c.envelope_to,
        OUTBOX.c.raw,
        OUTBOX.c.attempts_made,
        OUTBOX.c.attempts,
        OUTBOX.c.copy_to_sent,
        OUTBOX.c.created_at,
        OUTBOX.c.send_at,
    )  # in ClaimedMessage's field order
    return (
        text(sql + " RETURNING " + ", ".join(column.name for column in returning))
        .bindparams(
            # Typed: an empty list renders as a typed never-true IN (PostgreSQL refuses text = integer).
            bindparam("walked", expanding=True, type_=ACCOUNT.c.id.type),
            bindparam("busy", expanding=True, type_=ACCOUNT.c.id.type),
            # Typed: the column's own type writes the moment as stored (SQLite compares text).
            bindparam("now", type_=OUTBOX.c.next_attempt_at.type),
        )
        .columns(*returning)
    )


_CLAIM_SQLITE = _claim_statement(_sql(_CLAIM_SQLITE_SQL, sqlite=True))
_CLAIM_SKIP_LOCKED = _claim_statement(_sql(_CLAIM_POSTGRESQL_SQL, sqlite=False))


@dataclass
class RoundRobin:
    """A claimer's place in the round over accounts, kept between its claims.

    `after`: the next walk starts with the account after this one. `per_account`: how many of one
    account's due messages a claim considers, sized from the last claim (its limit over the accounts it
    served): enough for one account to fill a claim alone, while a claim across a hundred accounts ranks a
    hundred rows, not a hundred times its limit. `cut`: the last walk stopped at its length before the
    round was complete, so a claim that came back short does not mean that nothing else is due.
    `round_from`: where the current round of claims that found nothing began (None once one finds
    something); such claims go on until they have walked every account once, then stop."""

    after: str = ""
    per_account: int | None = None
    cut: bool = False
    round_from: str | None = None
    wrapped: bool = False


async def _walk(session: AsyncSession, rt: Runtime, turns: RoundRobin, accounts: int) -> list[str]:
    """Up to `accounts` accounts with queued messages, from `turns.after` on, round to the first ones again
    until the round that began at `turns.round_from` is complete; moves `turns` on past them."""
    statement = _WALK_SQLITE if rt.db.is_sqlite else _WALK_POSTGRESQL
    if turns.round_from is None:
        turns.round_from, turns.wrapped = turns.after, False
    end = turns.round_from
    walked: list[str] = []
    while len(walked) < accounts:
        room = accounts - len(walked)
        part = list((await session.execute(statement, {"after": turns.after, "accounts": room})).scalars())
        if turns.wrapped:  # the second lap: up to where the round began
            within = [account for account in part if account <= end]
            walked += within
            if len(within) < len(part) or len(part) < room or (within and within[-1] == end):
                return _round_complete(turns, walked)
        else:
            walked += part
            if len(part) < room:  # the last account: on from the first, unless that is where it began
                if not end:
                    return _round_complete(turns, walked)
                turns.wrapped, turns.after = True, ""
                continue
        turns.after = part[-1]
    turns.cut = True
    return walked


def _round_complete(turns: RoundRobin, walked: list[str]) -> list[str]:
    turns.cut, turns.after = False, turns.round_from or ""
    turns.round_from = None
    return walked


async def claim_messages(
    rt: Runtime,
    limit: int,
    *,
    turns: RoundRobin | None = None,
    bulk: bool = False,
    busy: Collection[str] = (),
) -> list[ClaimedMessage]:
    """Due, queued messages of CONNECTED accounts, round robin across accounts (see above), now claimed by
    this worker, each with its attempt counted (`attempts_made` is the number of the attempt about to be
    made). Messages of the `busy` accounts are left for a later claim, so one account's backlog cannot
    fill the pipeline. `turns`: the caller's place in the round (a fresh one starts at the first account).
    `bulk`: many rows are expected (see `Database.write`)."""
    turns = turns or RoundRobin()
    start = turns.after
    async with rt.db.write(bulk=bulk) as session:
        # A walk through accounts the claim cannot serve (busy, disconnected, only scheduled mail) stops
        # after this many; the next claim walks on from there.
        walked = await _walk(session, rt, turns, max(limit, 64))
        if not walked:
            return []
        params = {
            "now": rt.clock.now(),
            "worker": rt.worker_id,
            "walked": walked,
            # An empty expanding list renders as a never-true IN; NOT IN of it keeps every row.
            "busy": list(busy),
            "per_account": turns.per_account or limit,
            "limit": limit,
            "start": start,
        }
        rows = (await session.execute(_CLAIM_SQLITE if rt.db.is_sqlite else _CLAIM_SKIP_LOCKED, params)).all()
    claimed = [
        ClaimedMessage(r[0], r[1], r[2], r[3], tuple(r[4]), r[5], r[6], r[7], r[8], _due_from(r[9], r[10]))
        for r in rows
    ]
    served = {m.account_id for m in claimed}
    turns.per_account = -(-limit // len(served)) if served else None
    if served:  # found something: a later empty claim starts a round of its own
        turns.round_from = None
    if len(claimed) == limit:  # cut short by its limit: the next claim goes on after the last one served
        last = max(walked.index(account) for account in served)
        if last < len(walked) - 1:
            turns.after, turns.cut = walked[last], True
    claimed.sort(key=lambda m: m.id)
    return claimed


async def release_messages(rt: Runtime, ids: Collection[str], *, not_before: datetime | None = None) -> None:
    """Give claimed messages back untried (their account stopped being usable, or this worker is stopping):
    the attempt counted by the claim is given back too. `not_before`: they are due again only then (an
    OAuth2 token refresh that failed for now: the account stays usable, its messages wait)."""
    if not ids:
        return
    later = {} if not_before is None else {"next_attempt_at": not_before}
    async with rt.db.write() as session:
        await session.execute(
            update(OUTBOX)
            .where(
                OUTBOX.c.id.in_(list(ids)),
                still(OUTBOX.c.status, MessageStatus.SENDING),
                OUTBOX.c.claimed_by == rt.worker_id,
            )
            .values(
                status=MessageStatus.QUEUED,
                claimed_by=None,
                attempts_made=OUTBOX.c.attempts_made - 1,
                **later,
            )
            .execution_options(synchronize_session=False)
        )


class StalledMessage(NamedTuple):
    """A message that came back from a worker that stopped mid-send (see `requeue_stalled`)."""

    id: str
    account_id: str
    message_id: str
    status: str
    attempts_made: int
    attempts: int
    stalled_count: int


def _stalled_statement(owner_gone: ColumnElement[bool]) -> Any:
    """Messages in `sending` whose owner is gone go back to the queue, counted as a stall; one that has
    stalled more than `max_stalled` times, or has no attempt left, fails instead of being sent again."""
    stalls = OUTBOX.c.stalled_count + 1
    give_up = (stalls > bindparam("max_stalled")) | (OUTBOX.c.attempts_made >= OUTBOX.c.attempts)
    return (
        update(OUTBOX)
        .where(OUTBOX.c.status == MessageStatus.SENDING, owner_gone)
        .values(
            status=case((give_up, MessageStatus.FAILED.value), else_=MessageStatus.QUEUED.value),
            stalled_count=stalls,
            claimed_by=None,
            updated_at=bindparam("now"),
            last_error_message=case((give_up, bindparam("stalled_error")), else_=OUTBOX.c.last_error_message),
            last_error_code=case((give_up, STALLED_CODE), else_=OUTBOX.c.last_error_code),
            raw=case((give_up, b""), else_=OUTBOX.c.raw),
        )
        .returning(
            OUTBOX.c.id,
            OUTBOX.c.account_id,
            OUTBOX.c.message_id,
            OUTBOX.c.status,
            OUTBOX.c.attempts_made,
            OUTBOX.c.attempts,
            OUTBOX.c.stalled_count,
        )
        .execution_options(synchronize_session=False)
    )


STALLED_CODE = "ESTALLED"
STALLED_ERROR = (
    "Delivery was interrupted (the worker sending it stopped) too often or with no attempt left; "
    "not sent again to avoid duplicates"
)


def _live_workers() -> Any:
    return select(WORKER.c.id).where(WORKER.c.heartbeat_at >= bindparam("alive_since")).scalar_subquery()


def _owner_dead(claimed_by: ColumnElement[str | None]) -> ColumnElement[bool]:
    """Claimed by no live worker. Never this process's own claims: it still holds them in memory (a test's
    manual clock may make its own heartbeat look old for a moment)."""
    return (claimed_by.is_(None) | claimed_by.not_in(_live_workers())) & (
        claimed_by.is_(None) | (claimed_by != bindparam("me"))
    )


_REQUEUE_DEAD = _stalled_statement(_owner_dead(OUTBOX.c.claimed_by))
_REQUEUE_IDS = _stalled_statement(
    OUTBOX.c.id.in_(bindparam("ids", expanding=True)) & (OUTBOX.c.claimed_by == bindparam("me"))
)
_REQUEUE_DEAD_DELIVERIES = (
    update(DELIVERY)
    .where(DELIVERY.c.status == "sending", _owner_dead(DELIVERY.c.claimed_by))
    .values(status="pending", claimed_by=None)
    .execution_options(synchronize_session=False)
)
_REQUEUE_DEAD_COPIES = (
    update(OUTBOX)
    .where(OUTBOX.c.copy_status == CopyStatus.COPYING, _owner_dead(OUTBOX.c.claimed_by))
    .values(copy_status=CopyStatus.PENDING, claimed_by=None)
    .execution_options(synchronize_session=False)
)
_FORGET_DEAD_LEASES = delete(LEASE).where(_owner_dead(LEASE.c.worker_id))
_FORGET_DEAD_WORKERS = delete(WORKER).where(
    WORKER.c.heartbeat_at < bindparam("alive_since"), WORKER.c.id != bindparam("me")
)


async def requeue_stalled(
    session: AsyncSession, rt: Runtime, ids: Collection[str] | None = None
) -> tuple[list[StalledMessage], int]:
    """Work whose worker died mid-flight goes back to the queue (at-least-once delivery), within a lease of
    the worker's last heartbeat. With `ids`: this worker's own claims that it lost track of (a crashed lane).
    Returns the messages, and how many webhook deliveries and Sent copies came back."""
    now = rt.clock.now()
    params: dict[str, Any] = {
        "now": now,
        "me": rt.worker_id,
        "alive_since": alive_since(rt, now),
        "max_stalled": rt.settings.max_stalled,
        "stalled_error": STALLED_ERROR,
    }
    if ids is not None:
        rows = (await session.execute(_REQUEUE_IDS, {**params, "ids": list(ids)})).all()
        return [StalledMessage(*r) for r in rows], 0
    rows = (await session.execute(_REQUEUE_DEAD, params)).all()
    others = _rowcount(await session.execute(_REQUEUE_DEAD_DELIVERIES, params))
    others += _rowcount(await session.execute(_REQUEUE_DEAD_COPIES, params))
    await session.execute(_FORGET_DEAD_LEASES, params)  # their SMTP connections are gone with them
    await session.execute(_FORGET_DEAD_WORKERS, params)
    return [StalledMessage(*r) for r in rows], others


async def claim_webhook_deliveries(
    rt: Runtime, limit: int, busy: Collection[str] = ()
) -> list[ClaimedDelivery]:
    """Due deliveries that are first in line for their (webhook, order key): a receiver sees each
    message's events in order, even when an earlier one needed retries. Webhooks in `busy` (this worker has
    as many of their POSTs in flight as it allows) are skipped, so the claim goes to the others."""
    now = rt.clock.now()
    earlier = DELIVERY.alias("earlier")
    blocked = exists().where(
        earlier.c.webhook_id == DELIVERY.c.webhook_id,
        earlier.c.order_key == DELIVERY.c.order_key,
        earlier.c.seq < DELIVERY.c.seq,
        earlier.c.status.in_(("pending", "sending")),
    )
    due = (
        select(DELIVERY.c.seq)
        .where(
            DELIVERY.c.status == "pending",
            DELIVERY.c.next_attempt_at <= now,
            DELIVERY.c.webhook_id.not_in(list(busy)),
            ~blocked,
        )
        .order_by(DELIVERY.c.seq)
        .limit(limit)
    )
    if not rt.db.is_sqlite:
        due = due.with_for_update(skip_locked=True, of=DELIVERY)
    stmt = (
        update(DELIVERY)
        .where(DELIVERY.c.seq.in_(due.scalar_subquery()))
        .values(status="sending", claimed_by=rt.worker_id)
        .returning(
            DELIVERY.c.seq,
            DELIVERY.c.id,
            DELIVERY.c.webhook_id,
            DELIVERY.c.event,
            DELIVERY.c.body,
            DELIVERY.c.attempts_made,
            DELIVERY.c.created_at,
        )
        .execution_options(synchronize_session=False)
    )
    async with rt.db.write() as session:
        rows = (await session.execute(stmt)).all()
    out = [
        ClaimedDelivery(r.seq, r.id, r.webhook_id, r.event, r.body, r.attempts_made, utc(r.created_at))
        for r in rows
    ]
    out.sort(key=lambda d: d.seq)
    return out


async def give_back_webhook_deliveries(rt: Runtime, seqs: Collection[int]) -> None:
    """Claimed deliveries this worker will not POST now (their webhook has no room left): `pending` again,
    attempts untouched, as if never claimed."""
    async with rt.db.write() as session:
        await session.execute(
            update(DELIVERY)
            .where(
                DELIVERY.c.seq.in_(list(seqs)),
                still(DELIVERY.c.status, "sending"),
                DELIVERY.c.claimed_by == rt.worker_id,
            )
            .values(status="pending", claimed_by=None)
            .execution_options(synchronize_session=False)
        )


# -- Sent-folder copies ------------------------------------------------------------------------------------
# A sent message that asked for a Sent copy is recorded with copy_status 'pending' in the transaction that
# records `sent`; the copier claims it here ('copying', claimed_by this worker), like a message. The claim
# counts the attempt (a claim is an attempt), so copies cut off by crashes still spend their budget.


class ClaimedCopy(NamedTuple):
    id: str
    account_id: str
    message_id: str
    raw: bytes
    copy_attempts: int  # including this one
    sent_mail_path: str | None  # the message's own Sent folder, over the account's


def _claim_copies_statement(*, skip_locked: bool) -> Any:
    due = (
        select(OUTBOX.c.id)
        .where(OUTBOX.c.copy_status == CopyStatus.PENDING, OUTBOX.c.copy_next_attempt_at <= bindparam("now"))
        .order_by(OUTBOX.c.copy_next_attempt_at)
        .limit(bindparam("limit"))
    )
    if skip_locked:
        due = due.with_for_update(skip_locked=True, of=OUTBOX)
    return (
        update(OUTBOX)
        .where(OUTBOX.c.id.in_(due.scalar_subquery()))
        .values(
            copy_status=CopyStatus.COPYING,
            claimed_by=bindparam("worker"),
            copy_attempts=OUTBOX.c.copy_attempts + 1,
        )
        # In ClaimedCopy's field order.
        .returning(
            OUTBOX.c.id,
            OUTBOX.c.account_id,
            OUTBOX.c.message_id,
            OUTBOX.c.raw,
            OUTBOX.c.copy_attempts,
            OUTBOX.c.sent_mail_path,
        )
        .execution_options(synchronize_session=False)
    )


_CLAIM_COPIES_SQLITE = _claim_copies_statement(skip_locked=False)
_CLAIM_COPIES_SKIP_LOCKED = _claim_copies_statement(skip_locked=True)


async def claim_copies(rt: Runtime, limit: int) -> list[ClaimedCopy]:
    """Due Sent-folder copies, oldest due first, now held by this worker with one more attempt counted."""
    params = {"now": rt.clock.now(), "limit": limit, "worker": rt.worker_id}
    statement = _CLAIM_COPIES_SQLITE if rt.db.is_sqlite else _CLAIM_COPIES_SKIP_LOCKED
    async with rt.db.write() as session:
        rows = (await session.execute(statement, params)).all()
    return sorted((ClaimedCopy(*r) for r in rows), key=lambda c: c.id)


def held_copies(rt: Runtime, ids: list[str]) -> ColumnElement[bool]:
    """These copies, if this worker still holds them: a copy whose worker was taken for dead and which was
    claimed again belongs to its new holder, and nothing the old one does may change it."""
    return and_(
        OUTBOX.c.id.in_(ids),
        still(OUTBOX.c.copy_status, CopyStatus.COPYING),
        OUTBOX.c.claimed_by == rt.worker_id,
    )


async def release_copies(rt: Runtime, ids: list[str], *, tried: bool = False) -> None:
    """Give held copies back, due at once (a graceful stop). An untried copy gets its attempt back; a tried
    one (cut off mid-APPEND) keeps it, and may end up in the Sent folder twice -- never sent twice."""
    if not ids:
        return
    attempts = OUTBOX.c.copy_attempts if tried else OUTBOX.c.copy_attempts - 1
    async with rt.db.write() as session:
        await session.execute(
            update(OUTBOX)
            .where(held_copies(rt, ids))
            .values(copy_status=CopyStatus.PENDING, claimed_by=None, copy_attempts=attempts)
            .execution_options(synchronize_session=False)
        )
