"""Per-account pacing: a mailbox never sends more than its limits allow, over any window, on any node.

Why here and how:
- Providers block a mailbox for a day when it bursts past their limits, so every message of a paced account
  is *admitted* before it is sent. Admission happens right after the claim, in one transaction per claim:
  it counts the account's `send_log` rows in the sliding windows (last minute, hour, day), logs the messages
  it lets through, and gives the others back to the queue due when room opens, with the attempt the claim
  counted given back too (waiting for room is not a failed attempt). The counts live in the database, so
  they hold across restarts; on PostgreSQL the account's `account_pacing` row is locked (`FOR UPDATE`) for
  the transaction, so two nodes admitting for one account take turns and their sum stays within the limit.
- Limits come from the account (`set_limits`), else from its provider's published figures
  (gql_mail/provider_limits.py), warmed up (`ramped`) when the account asked for it. An account with none
  costs one read per claim and nothing else.
- A minute's quota is spread over the minute (a sixth every 10 s, `Rule.windows`), and a log row moves to
  the end of its message's attempt (`stamp_sent`): what a provider counts is arrivals, and a burst admitted
  at once would arrive late and meet the next window's.
- A throttling reply (mail/errors.py's `Throttle`) pauses the whole account (`pause`): growing backoff, or
  the server's own retry hint, or the end of the quota window for a daily quota. The message that met it
  goes back without losing its attempt, the account's queued messages wait until the pause ends, and
  `accountThrottled` is emitted once per pause.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from gql_mail.clock import utc
from gql_mail.events import ACCOUNT_THROTTLED, Event, iso
from gql_mail.mail.errors import Throttle
from gql_mail.models import AccountPacing, MessageStatus, OAuth2App, SendLog, table
from gql_mail.provider_limits import Limits, preset_for
from gql_mail.queue import ACCOUNT, OUTBOX, ClaimedMessage, still
from gql_mail.runtime import Runtime
from gql_mail.services.errors import BadInput, NotFound
from gql_mail.services.unit import UnitOfWork

PACING = table(AccountPacing)
OAUTH2_APP = table(OAuth2App)
SEND_LOG = table(SendLog)

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MINUTE_SLICES = 6

# Growing backoff of throttling pauses: 1, 2, 4 … minutes, at most an hour. A pause that starts within an
# hour of the last one's end is the next level; later, the account starts again at the first.
PAUSE_BASE = timedelta(minutes=1)
PAUSE_MAX = timedelta(hours=1)
PAUSE_MEMORY = timedelta(hours=1)
# A daily quota whose window cannot be read from our log (nothing logged) waits a whole day; one that can
# waits until the oldest logged send of the day leaves the window, but never less than this.
DAILY_MIN_PAUSE = timedelta(hours=1)
# Warm-up (`ramped`): the first day's share of the limits, doubled each day after.
RAMP_START = 1 / 16

_MAX_LIMIT = 10_000_000
_MAX_CONNECTIONS = 100


# -- limits ---------------------------------------------------------------------------------------------


def validated_limits(
    *,
    per_minute: int | None = None,
    per_hour: int | None = None,
    per_day: int | None = None,
    recipients_per_day: int | None = None,
    max_connections: int | None = None,
    ramp_up: bool = False,
) -> Limits:
    """Limits as given by a caller, checked: each a positive count or None (no limit of the account's own)."""
    given = {
        "perMinute": (per_minute, _MAX_LIMIT),
        "perHour": (per_hour, _MAX_LIMIT),
        "perDay": (per_day, _MAX_LIMIT),
        "recipientsPerDay": (recipients_per_day, _MAX_LIMIT),
        "maxConnections": (max_connections, _MAX_CONNECTIONS),
    }
    for name, (value, most) in given.items():
        if value is not None and not 1 <= value <= most:
            raise BadInput(f"limits.{name} must be between 1 and {most}", field=f"limits.{name}")
    return Limits(per_minute, per_hour, per_day, recipients_per_day, max_connections, ramp_up)


def _insert_missing(rt: Runtime, accounts: Sequence[str], now: datetime) -> Any:
    """An `account_pacing` row for each account that has none (a concurrent insert elsewhere wins)."""
    insert_ = sqlite_insert if rt.db.is_sqlite else pg_insert
    rows = [{"account_id": a, "throttle_level": 0, "ramp_up": False, "updated_at": now} for a in accounts]
    return insert_(PACING).values(rows).on_conflict_do_nothing(index_elements=["account_id"])


async def set_limits(rt: Runtime, account_id: str, limits: Limits) -> None:
    """Store the account's own limits; all None: back to its provider's preset (if any)."""
    now = rt.clock.now()
    async with rt.db.write() as session:
        if (await session.execute(select(ACCOUNT.c.id).where(ACCOUNT.c.id == account_id))).first() is None:
            raise NotFound(f"account {account_id!r} not found")
        await session.execute(_insert_missing(rt, [account_id], now))
        await session.execute(
            update(PACING)
            .where(PACING.c.account_id == account_id)
            .values(
                per_minute=limits.per_minute,
                per_hour=limits.per_hour,
                per_day=limits.per_day,
                recipients_per_day=limits.recipients_per_day,
                max_connections=limits.max_connections,
                ramp_up=limits.ramp_up,
                updated_at=now,
            )
        )
    rt.wake.delivery()  # messages waiting for room may fit under new limits


@dataclass(frozen=True)
class Rule:
    """What paces one account now: its effective limits and the end of a throttling pause, if any."""

    limits: Limits
    preset: str | None  # the provider preset the limits come from; None: the account's own (or none)
    throttled_until: datetime | None = None
    throttle_reason: str | None = None

    def paused(self, now: datetime) -> bool:
        return self.throttled_until is not None and self.throttled_until > now

    def windows(self) -> list[tuple[timedelta, int]]:
        lim = self.limits
        pairs = [(MINUTE, lim.per_minute), (HOUR, lim.per_hour), (DAY, lim.per_day)]
        if lim.per_minute is not None and lim.per_minute > MINUTE_SLICES:
            # A minute's quota is spread over the minute, a sixth every 10 s: a whole minute's worth at
            # once is the burst providers' rate detectors answer with 4.7.28/4.7.0, and it would fill the
            # delivery pipeline ahead of every other account's mail for that moment.
            pairs.append((MINUTE / MINUTE_SLICES, -(-lim.per_minute // MINUTE_SLICES)))
        return [(span, count) for span, count in pairs if count is not None]

    def paces(self, now: datetime) -> bool:
        return self.paused(now) or bool(self.windows()) or self.limits.recipients_per_day is not None


def _own_limits(row: Any) -> Limits:
    if (
        row is None
        or row.per_minute is None
        and row.per_hour is None
        and row.per_day is None
        and (row.recipients_per_day is None and row.max_connections is None)
    ):
        return Limits()
    return Limits(row.per_minute, row.per_hour, row.per_day, row.recipients_per_day, row.max_connections)


def ramped(limits: Limits, age: timedelta) -> Limits:
    """Warm-up, as deliverability guides advise for a new sender: a sixteenth of the limits on the account's
    first day, doubling every day, the whole from the fifth day (never below 1 a window)."""
    share = min(1.0, RAMP_START * 2 ** max(0, age.days))

    def part(value: int | None) -> int | None:
        return None if value is None else max(1, int(value * share))

    return replace(
        limits,
        per_minute=part(limits.per_minute),
        per_hour=part(limits.per_hour),
        per_day=part(limits.per_day),
        recipients_per_day=part(limits.recipients_per_day),
        ramp_up=True,
    )


def rule_of(
    smtp_host: str,
    email: str,
    pacing: Any,
    *,
    age: timedelta = timedelta(0),
    oauth2_provider: str | None = None,
) -> Rule:
    """The rule for an account: its own limits when it set any, else its provider's preset (by its OAuth2
    provider, else by its SMTP host); warmed up (`ramped`) by the account's age when it asked for that."""
    own = _own_limits(pacing)
    until = utc(pacing.throttled_until) if pacing is not None and pacing.throttled_until else None
    reason = pacing.throttle_reason if pacing is not None else None
    preset = None if not own.empty else preset_for(smtp_host, email, oauth2_provider)
    limits = own if preset is None else preset.limits
    if pacing is not None and pacing.ramp_up:
        limits = ramped(limits, age)
    return Rule(limits, preset.name if preset else None, until, reason)


_PACING_COLUMNS = (
    PACING.c.account_id,
    PACING.c.per_minute,
    PACING.c.per_hour,
    PACING.c.per_day,
    PACING.c.recipients_per_day,
    PACING.c.max_connections,
    PACING.c.throttled_until,
    PACING.c.throttle_reason,
    PACING.c.throttle_level,
    PACING.c.ramp_up,
)
_RULES = (
    select(
        ACCOUNT.c.id,
        ACCOUNT.c.smtp_host,
        ACCOUNT.c.email,
        ACCOUNT.c.created_at,
        OAUTH2_APP.c.provider.label("oauth2_provider"),
        *_PACING_COLUMNS[1:],
    )
    .select_from(
        ACCOUNT.outerjoin(PACING, PACING.c.account_id == ACCOUNT.c.id).outerjoin(
            OAUTH2_APP, OAUTH2_APP.c.id == ACCOUNT.c.oauth2_app_id
        )
    )
    .where(ACCOUNT.c.id.in_(bindparam("ids", expanding=True)))
)


def _rule_from_row(row: Any, now: datetime) -> Rule:
    pacing = row if row.throttle_level is not None else None  # no pacing row: the outer join's NULLs
    return rule_of(
        row.smtp_host, row.email, pacing, age=now - utc(row.created_at), oauth2_provider=row.oauth2_provider
    )


# -- usage ----------------------------------------------------------------------------------------------


@dataclass
class Usage:
    """Messages (and recipients) logged in each sliding window ending now."""

    last_minute: int = 0
    last_hour: int = 0
    today: int = 0  # the last 24 hours
    recipients_today: int = 0
    last_slice: int = 0  # the last sixth of a minute (see `Rule.windows`)

    def count(self, span: timedelta) -> int:
        return {MINUTE: self.last_minute, HOUR: self.last_hour, DAY: self.today}.get(span, self.last_slice)

    def add(self, recipients: int) -> None:
        self.last_slice += 1
        self.last_minute += 1
        self.last_hour += 1
        self.today += 1
        self.recipients_today += recipients


def _usage_query(now: datetime) -> Any:
    def within(span: timedelta) -> Any:
        return func.coalesce(func.sum(case((SEND_LOG.c.at > now - span, 1), else_=0)), 0)

    return (
        select(
            SEND_LOG.c.account_id,
            within(MINUTE),
            within(HOUR),
            func.count(),
            func.coalesce(func.sum(SEND_LOG.c.recipients), 0),
            within(MINUTE / MINUTE_SLICES),
        )
        .where(SEND_LOG.c.account_id.in_(bindparam("ids", expanding=True)), SEND_LOG.c.at > now - DAY)
        .group_by(SEND_LOG.c.account_id)
    )


async def _usage(session: AsyncSession, accounts: Sequence[str], now: datetime) -> dict[str, Usage]:
    rows = (await session.execute(_usage_query(now), {"ids": list(accounts)})).all()
    found = {r[0]: Usage(int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows}
    return {a: found.get(a, Usage()) for a in accounts}


def _fits(rule: Rule, usage: Usage, recipients: int) -> bool:
    if any(usage.count(span) >= most for span, most in rule.windows()):
        return False
    most = rule.limits.recipients_per_day
    # A message with more recipients than a whole day allows goes out alone, into an empty window.
    return most is None or usage.recipients_today == 0 or usage.recipients_today + recipients <= most


async def _room_at(
    session: AsyncSession, account: str, rule: Rule, now: datetime, recipients: int
) -> datetime:
    """When the account's windows next have room for a message of `recipients` recipients."""
    logged = (
        await session.execute(
            select(SEND_LOG.c.at, SEND_LOG.c.recipients)
            .where(SEND_LOG.c.account_id == account, SEND_LOG.c.at > now - DAY)
            .order_by(SEND_LOG.c.at.desc())
        )
    ).all()
    newest_first = [(utc(at), n) for at, n in logged]
    when = now
    for span, most in rule.windows():
        inside = [at for at, _ in newest_first if at > now - span]
        if len(inside) >= most:
            # Room opens when the most-th newest entry leaves the window.
            when = max(when, inside[most - 1] + span)
    daily = rule.limits.recipients_per_day
    if daily is not None:
        total = sum(n for _, n in newest_first)
        for at, n in reversed(newest_first):  # oldest first, until the rest leaves room
            if total == 0 or total + recipients <= daily:
                break
            total -= n
            when = max(when, at + DAY)
    return when if when > now else now + timedelta(seconds=1)


# -- admission ------------------------------------------------------------------------------------------


@dataclass
class Admission:
    """What a claim may send now; the rest of it went back to the queue, due when room opens."""

    messages: list[ClaimedMessage]
    # Accounts with a connection cap of their own (limits.maxConnections or their preset's).
    max_connections: dict[str, int] = field(default_factory=dict)
    deferred: int = 0
    # Admitted messages with a send-log row, to be stamped with the end of their attempt (`stamp_sent`).
    logged: set[str] = field(default_factory=set)


# How long an account read as having nothing to pace is taken to stay so (`UnpacedAccounts`).
UNPACED_FOR = timedelta(seconds=1)


@dataclass
class UnpacedAccounts:
    """Accounts a recent admission read as having nothing to pace (no limits, no preset, no pause), so the
    next claims of only such accounts skip the read: it was a measurable share of delivering a message.
    Held by one worker. The price: new limits, or a pause recorded by another node, apply after up to
    `UNPACED_FOR`; a pause met by this worker applies at once (`forget`)."""

    until: dict[str, datetime] = field(default_factory=dict)
    # Bumped by `forget`: a reading taken before it (an admission that read the rules while the pause was
    # being recorded) is not remembered after it.
    forgotten: int = 0

    def known(self, accounts: Sequence[str], now: datetime) -> bool:
        return all(self.until.get(a, now) > now for a in accounts)

    def remember(self, accounts: Sequence[str], now: datetime, read_at: int) -> None:
        if read_at != self.forgotten:
            return
        if len(self.until) > 10_000:
            self.until = {a: t for a, t in self.until.items() if t > now}
        for account in accounts:
            self.until[account] = now + UNPACED_FOR

    def forget(self, account: str) -> None:
        self.forgotten += 1
        self.until.pop(account, None)


_DEFER = (
    update(OUTBOX)
    .where(
        OUTBOX.c.id == bindparam("outbox_id"),
        still(OUTBOX.c.status, MessageStatus.SENDING),
        OUTBOX.c.claimed_by == bindparam("me"),
    )
    .values(
        status=MessageStatus.QUEUED,
        claimed_by=None,
        # Waiting for room is no attempt: the one the claim counted is given back.
        attempts_made=OUTBOX.c.attempts_made - 1,
        next_attempt_at=bindparam("when"),
    )
    .execution_options(synchronize_session=False)
)


async def admit(
    rt: Runtime, claimed: Sequence[ClaimedMessage], unpaced: UnpacedAccounts | None = None
) -> Admission:
    """Let through the claimed messages their accounts' limits have room for, log them, and give the rest
    back to the queue due when room opens (attempt not spent). One transaction; the paced accounts' rows
    are locked on PostgreSQL, so admissions on several nodes for one account take turns."""
    if not claimed:
        return Admission([])
    now = rt.clock.now()
    accounts = sorted({m.account_id for m in claimed})
    if unpaced is not None and unpaced.known(accounts, now):
        return Admission(list(claimed))
    read_at = unpaced.forgotten if unpaced is not None else 0
    # A read first: most claims have no paced account, and then cost no write transaction (on SQLite, no
    # turn of the one write lock).
    async with rt.db.read() as session:
        found = (await session.execute(_RULES, {"ids": accounts})).all()
    rules = {r.id: _rule_from_row(r, now) for r in found}
    caps = {a: r.limits.max_connections for a, r in rules.items() if r.limits.max_connections is not None}
    paced = [a for a, r in rules.items() if r.paces(now)]
    if unpaced is not None:
        unpaced.remember([a for a, r in rules.items() if not r.paces(now)], now, read_at)
    if not paced:
        return Admission(list(claimed), caps)
    async with rt.db.write() as session:
        if not rt.db.is_sqlite:
            # Lock the paced accounts' rows (made if missing): admissions on other nodes wait for this one.
            await session.execute(_insert_missing(rt, paced, now))
            await session.execute(
                select(PACING.c.account_id)
                .where(PACING.c.account_id.in_(paced))
                .order_by(PACING.c.account_id)
                .with_for_update()
            )
        # Read again inside the transaction: the account may have been paused, or sent for elsewhere, since.
        fresh = (await session.execute(_RULES, {"ids": paced})).all()
        rules.update({r.id: _rule_from_row(r, now) for r in fresh})
        usage = await _usage(session, paced, now)
        admitted: list[ClaimedMessage] = []
        logged: list[dict[str, Any]] = []
        waiting: dict[str, list[ClaimedMessage]] = defaultdict(list)
        for m in claimed:
            rule = rules.get(m.account_id)
            if m.account_id not in usage or rule is None:
                admitted.append(m)
            elif (
                not rule.paused(now)
                and not waiting[m.account_id]
                and _fits(rule, usage[m.account_id], len(m.envelope_to))
            ):
                recipients = len(m.envelope_to)
                usage[m.account_id].add(recipients)
                logged.append(
                    {"account_id": m.account_id, "at": now, "recipients": recipients, "outbox_id": m.id}
                )
                admitted.append(m)
            else:
                waiting[m.account_id].append(m)
        if logged:
            await session.execute(insert(SEND_LOG), logged)
        deferred: list[dict[str, Any]] = []
        for account, messages in waiting.items():
            if not messages:
                continue
            rule = rules[account]
            if rule.paused(now) and rule.throttled_until is not None:
                when = rule.throttled_until
            else:
                when = await _room_at(session, account, rule, now, len(messages[0].envelope_to))
            deferred.extend({"outbox_id": m.id, "me": rt.worker_id, "when": when} for m in messages)
        if deferred:
            await session.execute(_DEFER, deferred)
        # The log is only read a day back.
        await session.execute(
            delete(SEND_LOG).where(SEND_LOG.c.account_id.in_(paced), SEND_LOG.c.at <= now - DAY)
        )
    return Admission(admitted, caps, len(deferred), {row["outbox_id"] for row in logged})


_STAMP = (
    update(SEND_LOG)
    .where(SEND_LOG.c.outbox_id.in_(bindparam("ids", expanding=True)))
    .values(at=bindparam("now"), outbox_id=None)
    .execution_options(synchronize_session=False)
)


async def stamp_sent(rt: Runtime, ids: Sequence[str]) -> None:
    """Move the log rows of these admitted messages to now, the end of their attempt: a message that waited
    in a busy lane after its admission counts from when the provider saw it, so the next admission leaves
    a whole window after it (admission time alone let a late burst and the next window's meet)."""
    if ids:
        async with rt.db.write() as session:
            await session.execute(_STAMP, {"ids": list(ids), "now": rt.clock.now()})


# -- throttling -----------------------------------------------------------------------------------------


async def pause(uow: UnitOfWork, rt: Runtime, account_id: str, throttle: Throttle, now: datetime) -> datetime:
    """Pause the account after a throttling reply, in the caller's transaction; returns until when.

    Already paused: the running pause stands (one event per pause). Otherwise the pause lasts the server's
    retry hint when it gave one, else until the daily quota window ends (daily quota), else the growing
    backoff. The account's queued messages due before then wait until then; `accountThrottled` is emitted."""
    session = uow.session
    await session.execute(_insert_missing(rt, [account_id], now))
    locked = select(*_PACING_COLUMNS).where(PACING.c.account_id == account_id)
    if not rt.db.is_sqlite:
        locked = locked.with_for_update()
    row = (await session.execute(locked)).one()
    last_until = utc(row.throttled_until) if row.throttled_until else None
    if last_until is not None and last_until > now:
        return last_until
    level = row.throttle_level + 1 if last_until is not None and last_until > now - PAUSE_MEMORY else 1
    if throttle.retry_after is not None:
        delay = timedelta(seconds=throttle.retry_after)
    elif throttle.daily:
        delay = await _daily_window_end(session, account_id, now) - now
    else:
        delay = min(PAUSE_BASE * 2 ** (level - 1), PAUSE_MAX)
    until = now + delay
    await session.execute(
        update(PACING)
        .where(PACING.c.account_id == account_id)
        .values(throttled_until=until, throttle_reason=throttle.reason, throttle_level=level, updated_at=now)
    )
    await session.execute(
        update(OUTBOX)
        .where(
            OUTBOX.c.account_id == account_id,
            OUTBOX.c.status == MessageStatus.QUEUED,
            OUTBOX.c.next_attempt_at < until,
        )
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    uow.emit(
        Event(
            ACCOUNT_THROTTLED,
            account_id,
            now,
            {
                "account": account_id,
                "until": iso(until),
                "reason": throttle.reason,
                "dailyQuota": throttle.daily,
                "pause": level,
            },
            order_key=f"account:{account_id}",
        )
    )
    return until


async def give_back_paused(rt: Runtime, account_id: str, ids: Sequence[str]) -> None:
    """Claimed messages of an account that a throttling reply paused, not tried: back to the queue due when
    the pause ends, their attempt given back (the worker's lane holds them when the reply comes)."""
    if not ids:
        return
    now = rt.clock.now()
    async with rt.db.write() as session:
        until = (
            await session.execute(select(PACING.c.throttled_until).where(PACING.c.account_id == account_id))
        ).scalar_one_or_none()
        due = max(utc(until), now) if until is not None else now
        await session.execute(_DEFER, [{"outbox_id": i, "me": rt.worker_id, "when": due} for i in ids])


async def _daily_window_end(session: AsyncSession, account_id: str, now: datetime) -> datetime:
    """When a rolling daily quota frees: a day after the oldest send we logged in the last day."""
    oldest = (
        await session.execute(
            select(func.min(SEND_LOG.c.at)).where(
                SEND_LOG.c.account_id == account_id, SEND_LOG.c.at > now - DAY
            )
        )
    ).scalar_one_or_none()
    if oldest is None:
        return now + DAY
    return max(utc(oldest) + DAY, now + DAILY_MIN_PAUSE)


# -- status ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PacingStatus:
    """An account's pacing as `account { limits usage throttledUntil }` shows it."""

    limits: Limits
    preset: str | None
    usage: Usage
    throttled_until: datetime | None
    throttle_reason: str | None


async def pacing_status(rt: Runtime, account_id: str) -> PacingStatus:
    """The account's effective limits (with the preset they come from), its usage of each window now, and
    the end of a throttling pause still running."""
    now = rt.clock.now()
    async with rt.db.read() as session:
        row = (await session.execute(_RULES, {"ids": [account_id]})).first()
        if row is None:
            raise NotFound(f"account {account_id!r} not found")
        usage = (await _usage(session, [account_id], now))[account_id]
    rule = _rule_from_row(row, now)
    paused = rule.paused(now)
    return PacingStatus(
        rule.limits,
        rule.preset,
        usage,
        rule.throttled_until if paused else None,
        rule.throttle_reason if paused else None,
    )


__all__ = [
    "Admission",
    "Limits",
    "PacingStatus",
    "Rule",
    "UnpacedAccounts",
    "Usage",
    "admit",
    "give_back_paused",
    "pacing_status",
    "pause",
    "set_limits",
    "stamp_sent",
    "validated_limits",
]
