"""Mailbox accounts: registration, settings, and the background check that moves their state.

State machine: NEW -> CONNECTING -> CONNECTED | AUTHENTICATION_ERROR | CONNECT_ERROR. A check does its
network I/O between two short transactions, and `Account.version` keeps a slow check from overwriting the
result for settings that changed meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Row, func, or_, select
from sqlmodel import col

from gql_mail.clock import utc
from gql_mail.events import (
    ACCOUNT_ADDED,
    ACCOUNT_CONNECTED,
    ACCOUNT_DELETED,
    AUTHENTICATION_ERROR,
    CONNECT_ERROR,
    Event,
)
from gql_mail.mail.compose import ComposeError, validate_address
from gql_mail.mail.errors import MailError
from gql_mail.mail.imap import ImapSettings, verify_imap
from gql_mail.mail.smtp import SmtpSettings, verify_smtp
from gql_mail.models import Account, AccountState, OAuth2App
from gql_mail.runtime import Runtime
from gql_mail.services import cursors, oauth2_tokens
from gql_mail.services import validation as v
from gql_mail.services.errors import BadInput, Conflict, NotFound
from gql_mail.services.oauth2_accounts import OAuth2Login, OAuth2Spec, apply_oauth2, oauth2_app, stored_login
from gql_mail.services.unit import unit_of_work

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuthSpec:
    user: str | None
    password: str | None = None
    access_token: str | None = None


@dataclass(frozen=True)
class ImapSpec:
    host: str | None = None
    port: int | None = None
    secure: bool | None = None
    auth: AuthSpec | None = None
    reject_unauthorized: bool | None = None
    require_tls: bool | None = None  # None: the deployment's default (`Settings.require_tls`)
    disabled: bool | None = None
    sent_mail_path: str | None = None
    partial: bool = False  # EmailEngine's `partial`: what is None here keeps the stored value


@dataclass(frozen=True)
class SmtpSpec:
    host: str | None
    port: int | None
    auth: AuthSpec | None
    secure: bool | None = None
    reject_unauthorized: bool | None = None
    require_tls: bool | None = None  # None: the deployment's default (`Settings.require_tls`)
    partial: bool = False  # EmailEngine's `partial`: what is None here keeps the stored value


@dataclass(frozen=True)
class AccountSpec:
    """A new account. `email`, and `smtp` unless `oauth2` is given, are required of a new one (None is
    refused); an upsert of an existing id keeps the stored values of what is None here."""

    account: str
    name: str
    email: str | None
    smtp: SmtpSpec | None
    imap: ImapSpec | None = None
    oauth2: OAuth2Spec | None = None


@dataclass(frozen=True)
class AccountPatch:
    """updateAccount: fields left None keep their value; a given imap/smtp/oauth2 block replaces the old
    one (new OAuth2 tokens end an AUTHENTICATION_ERROR their refusal caused)."""

    name: str | None = None
    email: str | None = None
    smtp: SmtpSpec | None = None
    imap: ImapSpec | None = None
    oauth2: OAuth2Spec | None = None


def _auth(auth: AuthSpec | None, field: str) -> AuthSpec:
    if auth is None:
        raise BadInput(f"{field} is required", field=field)
    v.required_text(auth.user, f"{field}.user", max_length=512)
    if not auth.password and not auth.access_token:
        raise BadInput(f"{field}.pass or {field}.accessToken is required", field=f"{field}.pass")
    return auth


def _email(value: str | None) -> str:
    if not value:
        raise BadInput("email is required", field="email")
    try:
        return validate_address(value, "email")
    except ComposeError as exc:
        raise BadInput(str(exc), field="email") from exc


def _reachable(rt: Runtime, host: str, field: str) -> str:
    """A host that is an address the outbound policy refuses is refused now, by its field (a name is
    judged when it is resolved, at each connection)."""
    if (rule := rt.outbound.literal_refusal(host)) is not None:
        raise BadInput(f"{field} is an address outbound connections may not reach ({rule})", field=field)
    return host


def _apply_smtp(rt: Runtime, row: Account, smtp: SmtpSpec | None, oauth2: OAuth2Login | None = None) -> None:
    """The SMTP block; for an OAuth2 account (`oauth2`), the provider's server fills what it leaves out
    and the login is XOAUTH2 as the OAuth2 user."""
    smtp = smtp or SmtpSpec(host=None, port=None, auth=None)
    server = oauth2.provider.smtp if oauth2 else None
    host = v.hostname(smtp.host or (server.host if server else None), "smtp.host")
    row.smtp_host = _reachable(rt, host, "smtp.host")
    row.smtp_port = v.port(smtp.port or (server.port if server else None), "smtp.port")
    secure = smtp.secure if smtp.secure is not None else (server.secure if server else False)
    row.smtp_secure = bool(secure)
    if oauth2 is not None:
        row.smtp_user, row.smtp_pass_enc, row.smtp_token_enc = oauth2.user, None, None
    else:
        auth = _auth(smtp.auth, "smtp.auth")
        row.smtp_user = auth.user or ""
        row.smtp_pass_enc = rt.secrets.maybe_encrypt(auth.password)
        row.smtp_token_enc = rt.secrets.maybe_encrypt(auth.access_token)
    row.smtp_reject_unauthorized = smtp.reject_unauthorized is not False
    row.smtp_require_tls = smtp.require_tls


def _apply_imap(rt: Runtime, row: Account, imap: ImapSpec | None, oauth2: OAuth2Login | None = None) -> None:
    if imap is None or imap.disabled:
        row.imap_disabled = True
        row.imap_host = row.imap_port = row.imap_user = row.imap_pass_enc = row.imap_token_enc = None
        row.sent_mail_path = None
        row.imap_require_tls = None
        return
    server = oauth2.provider.imap if oauth2 else None
    row.imap_disabled = False
    host = v.hostname(imap.host or (server.host if server else None), "imap.host")
    row.imap_host = _reachable(rt, host, "imap.host")
    row.imap_port = v.port(imap.port or (server.port if server else None), "imap.port")
    if oauth2 is not None:
        secure = imap.secure if imap.secure is not None else (server.secure if server else False)
        row.imap_secure = bool(secure)
        row.imap_user, row.imap_pass_enc, row.imap_token_enc = oauth2.user, None, None
    else:
        auth = _auth(imap.auth, "imap.auth")
        row.imap_secure = bool(imap.secure)
        row.imap_user = auth.user
        row.imap_pass_enc = rt.secrets.maybe_encrypt(auth.password)
        row.imap_token_enc = rt.secrets.maybe_encrypt(auth.access_token)
    row.imap_reject_unauthorized = imap.reject_unauthorized is not False
    row.imap_require_tls = imap.require_tls
    row.sent_mail_path = (
        v.no_control_chars(imap.sent_mail_path, "imap.sentMailPath", max_length=512)
        if imap.sent_mail_path
        else None
    )


_Block = TypeVar("_Block", SmtpSpec, ImapSpec)


def _stored_auth(rt: Runtime, user: str | None, password: str | None, token: str | None) -> AuthSpec | None:
    if user is None:
        return None
    return AuthSpec(
        user=user, password=rt.secrets.maybe_decrypt(password), access_token=rt.secrets.maybe_decrypt(token)
    )


def _stored_smtp(rt: Runtime, row: Account) -> SmtpSpec:
    return SmtpSpec(
        host=row.smtp_host,
        port=row.smtp_port,
        auth=_stored_auth(rt, row.smtp_user, row.smtp_pass_enc, row.smtp_token_enc),
        secure=row.smtp_secure,
        reject_unauthorized=row.smtp_reject_unauthorized,
        require_tls=row.smtp_require_tls,
    )


def _stored_imap(rt: Runtime, row: Account) -> ImapSpec:
    return ImapSpec(
        host=row.imap_host,
        port=row.imap_port,
        secure=row.imap_secure,
        auth=_stored_auth(rt, row.imap_user, row.imap_pass_enc, row.imap_token_enc),
        reject_unauthorized=row.imap_reject_unauthorized,
        require_tls=row.imap_require_tls,
        disabled=row.imap_disabled,
        sent_mail_path=row.sent_mail_path,
    )


def _merged(stored: _Block, given: _Block) -> _Block:
    """`given` over `stored`, field by field: EmailEngine's `partial: true` (a given `auth` replaces the
    stored one whole, as there)."""
    changes = {f.name: getattr(given, f.name) for f in fields(given) if getattr(given, f.name) is not None}
    return replace(stored, **{**changes, "partial": False})


def _account_id(value: str) -> str:
    return v.required_text(value, "account", max_length=256)


def _name(value: str | None) -> str:
    return v.no_control_chars(value or "", "name", max_length=256)


async def register_account(rt: Runtime, spec: AccountSpec) -> Account:
    """Store the account as NEW and start its connection check in the background."""
    now = rt.clock.now()
    row = Account(
        id=_account_id(spec.account),
        name=_name(spec.name),
        email=_email(spec.email),
        state=AccountState.NEW,
        smtp_host="",
        smtp_port=0,
        smtp_user="",
        created_at=now,
        updated_at=now,
    )
    oauth2 = None
    if spec.oauth2 is not None:
        oauth2 = apply_oauth2(rt, row, spec.oauth2, await oauth2_app(rt, spec.oauth2.app))
    elif spec.smtp is None:
        raise BadInput("smtp is required", field="smtp")
    _apply_smtp(rt, row, spec.smtp, oauth2)
    _apply_imap(rt, row, spec.imap, oauth2)
    async with unit_of_work(rt) as uow:
        if await uow.session.get(Account, row.id) is not None:
            raise Conflict(f"account {row.id!r} already exists", field="account")
        uow.session.add(row)
        uow.emit(Event(ACCOUNT_ADDED, row.id, now, {"account": row.id, "name": row.name, "email": row.email}))
    rt.wake.account_check(row.id)
    return row


# EmailEngine's generated account ids: 16 characters of [0-9a-z].
_GENERATED_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_GENERATED_ID_LENGTH = 16


def generated_account_id(rt: Runtime) -> str:
    """An id for an account registered without one (EmailEngine's `"account": null`)."""
    return "".join(rt.rng.choice(_GENERATED_ID_ALPHABET) for _ in range(_GENERATED_ID_LENGTH))


async def upsert_account(rt: Runtime, spec: AccountSpec) -> tuple[Account, bool]:
    """EmailEngine's `POST /v1/account`: register the account, or, when the id is taken, update it with
    the given settings (`email`, `smtp`, `imap` left out keep the stored ones). True when it was created.
    GraphQL's `registerAccount` keeps refusing a taken id (CONFLICT); this is the REST contract."""
    if not spec.account:  # a generated id never updates another account
        return await register_account(rt, replace(spec, account=generated_account_id(rt))), True
    async with rt.db.read() as session:
        exists = await session.get(Account, spec.account) is not None
    if not exists:
        try:
            return await register_account(rt, spec), True
        except Conflict:  # registered by a concurrent call meanwhile: update it
            pass
    patch = AccountPatch(
        name=spec.name, email=spec.email or None, smtp=spec.smtp, imap=spec.imap, oauth2=spec.oauth2
    )
    return await update_account(rt, spec.account, patch), False


async def update_account(rt: Runtime, account_id: str, patch: AccountPatch) -> Account:
    """Change settings and check them again; the account is CONNECTING until the check ends."""
    app = await oauth2_app(rt, patch.oauth2.app) if patch.oauth2 is not None else None
    async with unit_of_work(rt) as uow:
        row = await _require(uow.session, account_id)
        if patch.name is not None:
            row.name = _name(patch.name)
        if patch.email is not None:
            row.email = _email(patch.email)
        oauth2: OAuth2Login | None = None
        if patch.oauth2 is not None and app is not None:
            oauth2 = apply_oauth2(rt, row, patch.oauth2, app)
        elif row.oauth2_app_id is not None:
            oauth2 = stored_login(row, await uow.session.get(OAuth2App, row.oauth2_app_id))
        smtp = patch.smtp
        if smtp is not None and smtp.partial:
            smtp = _merged(_stored_smtp(rt, row), smtp)
        imap = patch.imap
        if imap is not None and imap.partial:
            imap = _merged(_stored_imap(rt, row), imap)
        if patch.oauth2 is not None:
            # The logins become the new user's, on the servers given, or kept, or the provider's.
            _apply_smtp(rt, row, smtp or _stored_smtp(rt, row), oauth2)
            if imap is not None or not row.imap_disabled:
                _apply_imap(rt, row, imap or _stored_imap(rt, row), oauth2)
        else:
            if smtp is not None:
                _apply_smtp(rt, row, smtp, oauth2)
            if imap is not None:
                _apply_imap(rt, row, imap, oauth2)
        row.version += 1
        row.state = AccountState.CONNECTING
        row.updated_at = rt.clock.now()
    rt.wake.account_check(row.id)
    return row


async def reconnect_account(rt: Runtime, account_id: str) -> Account:
    """Check the account again now; an OAuth2 account's stored refusal and refresh backoff are forgotten
    (its refresh token is tried once more)."""
    async with unit_of_work(rt) as uow:
        row = await _require(uow.session, account_id)
        row.oauth2_error = row.oauth2_retry_at = None
        row.oauth2_failures = 0
        row.state = AccountState.CONNECTING
        row.version += 1
        row.updated_at = rt.clock.now()
    rt.wake.account_check(row.id)
    return row


async def delete_account(rt: Runtime, account_id: str) -> bool:
    """Delete the account and its queued messages."""
    async with unit_of_work(rt) as uow:
        row = await _require(uow.session, account_id)
        await uow.session.delete(row)
        uow.emit(Event(ACCOUNT_DELETED, row.id, rt.clock.now(), {"account": row.id}))
    return True


async def _require(session: Any, account_id: str) -> Account:
    row: Account | None = await session.get(Account, account_id)
    if row is None:
        raise NotFound(f"no account {account_id!r}", field="account")
    return row


async def get_account(rt: Runtime, account_id: str) -> Account:
    async with rt.db.read() as session:
        return await _require(session, account_id)


_ACCOUNT_TABLE = Account.__table__  # type: ignore[attr-defined]
_ALL_ACCOUNTS = select(_ACCOUNT_TABLE).order_by(_ACCOUNT_TABLE.c.created_at)


async def list_accounts(rt: Runtime) -> Sequence[Row[Any]]:
    """Every account, oldest first, as rows whose attributes are the model's (its columns).

    Rows, not ORM instances: nothing here is changed, and loading forty-odd columns into an instance in a
    session was most of the CPU a trivial `{ accounts { account } }` cost (bench/http_ceiling.py). A
    `small_read`: an installation has tens or hundreds of accounts, not the outbox's millions."""
    return await rt.db.small_read(_ALL_ACCOUNTS)


@dataclass(frozen=True)
class AccountPage:
    accounts: Sequence[Account]
    total: int  # matching accounts on all pages


async def page_accounts(
    rt: Runtime,
    *,
    page: int = 0,
    page_size: int = 20,
    state: AccountState | None = None,
    query: str | None = None,
) -> AccountPage:
    """One page (0-based) of the accounts in registration order, optionally only those in `state` and
    those whose id, name or email contains `query` (case-insensitive)."""
    v.check_page(page, page_size)
    conditions = _account_conditions(state, query)
    rows = select(Account).where(*conditions).order_by(col(Account.created_at), col(Account.id))
    count = select(func.count()).select_from(Account).where(*conditions)
    async with rt.db.read() as session:
        total = int((await session.execute(count)).scalar_one())
        found = (await session.execute(rows.offset(page * page_size).limit(page_size))).scalars().all()
    return AccountPage(accounts=found, total=total)


_ACCOUNT_CURSOR = "account"


def _account_conditions(state: AccountState | None, query: str | None) -> list[Any]:
    """`state` and a case-insensitive `query` on id, name or email: the filters of every account listing."""
    conditions: list[Any] = []
    if state is not None:
        conditions.append(col(Account.state) == state)
    if query:
        needle = v.no_control_chars(query, "query", max_length=256).lower()
        conditions.append(
            or_(
                *(
                    func.lower(column).contains(needle, autoescape=True)
                    for column in (col(Account.id), col(Account.name), col(Account.email))
                )
            )
        )
    return conditions


async def count_accounts(rt: Runtime, *, state: AccountState | None = None, query: str | None = None) -> int:
    count = select(func.count()).select_from(Account).where(*_account_conditions(state, query))
    async with rt.db.read() as session:
        return int((await session.execute(count)).scalar_one())


async def accounts_after(
    rt: Runtime,
    *,
    first: int = cursors.DEFAULT_FIRST,
    after: str | None = None,
    state: AccountState | None = None,
    query: str | None = None,
) -> cursors.CursorPage[Account]:
    """Up to `first` accounts after the cursor `after`, in registration order (created_at, then id: ids are
    chosen by users and do not sort by time). Keyset paging: the cursor holds both keys."""
    first = cursors.check_first(first)
    conditions = _account_conditions(state, query)
    if after is not None:
        created, last_id = cursors.decode(_ACCOUNT_CURSOR, after, 2)
        try:
            since = utc(datetime.fromisoformat(created))
        except ValueError:
            raise BadInput("after is not a cursor this listing made", field="after") from None
        conditions.append(
            or_(
                col(Account.created_at) > since,
                (col(Account.created_at) == since) & (col(Account.id) > last_id),
            )
        )
    rows = select(Account).where(*conditions).order_by(col(Account.created_at), col(Account.id))
    async with rt.db.read() as session:
        found = (await session.execute(rows.limit(first + 1))).scalars().all()
    edges = [(cursors.encode(_ACCOUNT_CURSOR, utc(r.created_at).isoformat(), r.id), r) for r in found[:first]]
    return cursors.CursorPage(edges=edges, has_next=len(found) > first)


def _require_tls(rt: Runtime, account_value: bool | None) -> bool:
    """The account's own `requireTLS` if it set one, else the deployment's default."""
    return rt.settings.require_tls if account_value is None else account_value


def smtp_settings(rt: Runtime, row: Account) -> SmtpSettings:
    return SmtpSettings(
        host=row.smtp_host,
        port=row.smtp_port,
        secure=row.smtp_secure,
        require_tls=_require_tls(rt, row.smtp_require_tls),
        user=row.smtp_user,
        password=rt.secrets.maybe_decrypt(row.smtp_pass_enc),
        access_token=rt.secrets.maybe_decrypt(row.smtp_token_enc),
        reject_unauthorized=row.smtp_reject_unauthorized,
        timeout=rt.settings.smtp_timeout_seconds,
        outbound=rt.outbound,
    )


def imap_settings(rt: Runtime, row: Account) -> ImapSettings | None:
    if row.imap_disabled or row.imap_host is None or row.imap_port is None:
        return None
    return ImapSettings(
        host=row.imap_host,
        port=row.imap_port,
        secure=row.imap_secure,
        require_tls=_require_tls(rt, row.imap_require_tls),
        user=row.imap_user or "",
        password=rt.secrets.maybe_decrypt(row.imap_pass_enc),
        access_token=rt.secrets.maybe_decrypt(row.imap_token_enc),
        reject_unauthorized=row.imap_reject_unauthorized,
        timeout=rt.settings.imap_timeout_seconds,
        outbound=rt.outbound,
    )


def _state_for(error: MailError | None) -> AccountState:
    if error is None:
        return AccountState.CONNECTED
    return AccountState.AUTHENTICATION_ERROR if error.auth_failure else AccountState.CONNECT_ERROR


_STATE_EVENTS = {
    AccountState.CONNECTED: ACCOUNT_CONNECTED,
    AccountState.AUTHENTICATION_ERROR: AUTHENTICATION_ERROR,
    AccountState.CONNECT_ERROR: CONNECT_ERROR,
}


async def check_account(rt: Runtime, account_id: str, *, periodic: bool = False) -> AccountState | None:
    """Log in over IMAP (unless disabled) and SMTP, and record the outcome. None: nothing was recorded
    (the account is gone or changed while we checked; the newer check decides). `periodic`: the
    scheduler's check, whose network errors a CONNECTED account tolerates a few times (see
    `record_account_state`); a check asked for (register, update, reconnect) records what it found."""
    async with rt.db.write() as session:
        row = await session.get(Account, account_id)
        if row is None:
            return None
        if row.state == AccountState.NEW:
            row.state = AccountState.CONNECTING
        version = row.version
        smtp = smtp_settings(rt, row)
        imap = imap_settings(rt, row)
        oauth2 = row.oauth2_app_id is not None

    async def verify(token: str | None) -> None:
        if imap is not None:
            await verify_imap(imap if token is None else replace(imap, access_token=token))
        await verify_smtp(smtp if token is None else replace(smtp, access_token=token))

    error: MailError | None = None
    try:
        if oauth2:
            await oauth2_tokens.with_token(rt, account_id, verify)
        else:
            await verify(None)
    except MailError as exc:
        error = exc
    return await record_account_state(rt, account_id, error, version=version, periodic=periodic)


def _blip(rt: Runtime, row: Account, error: MailError | None, now: datetime) -> bool:
    """Whether a periodic check's failure leaves a CONNECTED account CONNECTED: a network error (not a
    refused login: a wrong password is no blip; nor an outbound-policy refusal, EPOLICY: the host now
    resolves where we may not go, which no retry mends and which must not hide behind CONNECTED) before
    `account_check_failures_before_error` of them in a row. Counts the failure in `row.check_failures`,
    once per round of checks: every node runs the periodic check, often at the same moment, and one blip
    seen by three nodes is still one blip."""
    if error is None or error.auth_failure or error.code == "EPOLICY" or row.state != AccountState.CONNECTED:
        return False
    half_round = timedelta(seconds=rt.settings.account_check_interval_seconds / 2)
    if row.checked_at is None or now - utc(row.checked_at) >= half_round:
        row.check_failures += 1
    return row.check_failures < rt.settings.account_check_failures_before_error


async def record_account_state(
    rt: Runtime,
    account_id: str,
    error: MailError | None,
    *,
    version: int | None = None,
    periodic: bool = False,
) -> AccountState | None:
    """Set the state an outcome implies; emit its event when the state changes. Also used by delivery
    when SMTP authentication fails at send time.

    Should the error's texts fail to be written (whatever the database refuses in a server's answer), the
    same state is written again with a constant text: an account must not stay CONNECTING, or CONNECTED
    with a refused password, because of how its server worded the refusal.

    `periodic`: a tolerated failure (`_blip`) keeps the account CONNECTED and its queue running; it is
    still shown, as `lastError` beside the CONNECTED state, until a check succeeds."""
    try:
        state = await _write_account_state(rt, account_id, error, version, periodic)
    except Exception:
        if error is None:
            raise
        log.exception("recording the state of account %s failed; recording it without its text", account_id)
        safe = MailError(_UNRECORDABLE_TEXT, code=error.code, auth_failure=error.auth_failure)
        state = await _write_account_state(rt, account_id, safe, version, periodic)
    if state == AccountState.CONNECTED:
        rt.wake.delivery()
    return state


# What an account's last error says when the server's own words could not be recorded.
_UNRECORDABLE_TEXT = "connecting or logging in failed, and the error's text could not be recorded"


async def _write_account_state(
    rt: Runtime, account_id: str, error: MailError | None, version: int | None, periodic: bool
) -> AccountState | None:
    """The state written; None: nothing written (the account is gone, or changed since `version`)."""
    state = _state_for(error)
    async with unit_of_work(rt) as uow:
        row = await uow.session.get(Account, account_id)
        if row is None or (version is not None and row.version != version):
            return None
        now = rt.clock.now()
        if periodic and _blip(rt, row, error, now):
            state = AccountState.CONNECTED
        else:
            row.check_failures = 0
        changed = row.state != state
        row.state = state
        row.checked_at = now
        row.last_error_message = str(error) if error else None
        row.last_error_code = error.code if error else None
        if state == AccountState.CONNECTED:
            row.connected_at = row.connected_at if not changed else now
        if changed and state in _STATE_EVENTS:
            data: dict[str, Any] = {"state": state.value}
            if error is not None:
                data.update(error=str(error), errorCode=error.code, response=error.response)
            uow.emit(Event(_STATE_EVENTS[state], account_id, now, data, order_key=account_id))
    return state
