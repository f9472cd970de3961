"""Access tokens: only a SHA-256 of each token is stored; the token itself is shown once, at creation."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlmodel import col

from gql_mail.models import AccessToken
from gql_mail.runtime import Runtime
from gql_mail.services import validation as v
from gql_mail.services.errors import BadInput, NotFound

TOKEN_PREFIX = "gqlm_"
# "api" may do everything; "read" may only query and subscribe; "metrics" may only scrape /metrics (for a
# Prometheus server's configuration, where a token that reads accounts and messages has no business).
SCOPES = ("api", "read", "metrics")
# The scopes the APIs (GraphQL, REST, websockets) accept: a metrics token is refused there like no token.
API_SCOPES = ("api", "read")
# The scopes /metrics accepts.
METRICS_SCOPES = ("metrics", "api")
MAX_DESCRIPTION = 1024  # EmailEngine's bound


@dataclass(frozen=True)
class Principal:
    token_id: str
    scope: str

    @property
    def can_write(self) -> bool:
        return self.scope == "api"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(
    rt: Runtime, scope: str = "api", description: str | None = None
) -> tuple[AccessToken, str]:
    """Returns the stored row and the token, which exists nowhere else once this returns."""
    if scope not in SCOPES:
        raise BadInput(f"scope must be one of {', '.join(SCOPES)}", field="scope")
    if description is not None:
        description = v.no_control_chars(description, "description", max_length=MAX_DESCRIPTION)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = AccessToken(
        id=uuid.uuid4().hex[:16],
        token_hash=hash_token(token),
        scope=scope,
        description=description,
        created_at=rt.clock.now(),
    )
    async with rt.db.write() as session:
        session.add(row)
    return row, token


async def list_tokens(rt: Runtime) -> Sequence[AccessToken]:
    async with rt.db.read() as session:
        return (
            (await session.execute(select(AccessToken).order_by(col(AccessToken.created_at)))).scalars().all()
        )


@dataclass(frozen=True)
class TokenPage:
    tokens: Sequence[AccessToken]
    total: int  # active tokens on all pages


async def page_tokens(rt: Runtime, *, page: int = 0, page_size: int = 20) -> TokenPage:
    """One page (0-based) of the tokens not revoked, oldest first (EmailEngine's `GET /v1/tokens`)."""
    v.check_page(page, page_size)
    active = col(AccessToken.revoked_at).is_(None)
    rows = select(AccessToken).where(active).order_by(col(AccessToken.created_at), col(AccessToken.id))
    count = select(func.count()).select_from(AccessToken).where(active)
    async with rt.db.read() as session:
        total = int((await session.execute(count)).scalar_one())
        found = (await session.execute(rows.offset(page * page_size).limit(page_size))).scalars().all()
    return TokenPage(tokens=found, total=total)


async def revoke_reference(rt: Runtime, reference: str) -> bool:
    """Revoke the token a reference names: its id, or the token itself (EmailEngine's `DELETE
    /v1/tokens/{token}` takes either). False when no active token has it."""
    token_id = reference
    if reference.startswith(TOKEN_PREFIX):
        row = await rt.db.lookup(
            "SELECT id FROM access_token WHERE token_hash = :digest", {"digest": hash_token(reference)}
        )
        if row is None:
            return False
        token_id = str(row[0])
    try:
        await revoke_token(rt, token_id)
    except NotFound:
        return False
    return True


async def revoke_token(rt: Runtime, token_id: str) -> None:
    async with rt.db.write() as session:
        result = await session.execute(
            update(AccessToken)
            .where(col(AccessToken.id) == token_id, col(AccessToken.revoked_at).is_(None))
            .values(revoked_at=rt.clock.now())
        )
        if cast(CursorResult[Any], result).rowcount == 0:
            raise NotFound(f"no active token {token_id}")
    rt.bus.revoke(token_id)


async def authenticate(
    rt: Runtime, token: str | None, scopes: Collection[str] = API_SCOPES
) -> Principal | None:
    """The principal of a valid, unrevoked token with one of `scopes`; None otherwise. Looked up on every
    call, so a revocation takes effect at once."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    # One indexed row on every request: `lookup` reads it without a session (see Database.lookup).
    row = await rt.db.lookup(
        "SELECT id, scope, token_hash FROM access_token WHERE token_hash = :digest AND revoked_at IS NULL",
        {"digest": digest},
    )
    if row is None:
        return None
    token_id, scope, stored = row
    if not hmac.compare_digest(str(stored), digest) or str(scope) not in scopes:
        return None
    return Principal(token_id=str(token_id), scope=str(scope))


async def is_active(rt: Runtime, token_id: str) -> bool:
    row = await rt.db.lookup(
        "SELECT 1 FROM access_token WHERE id = :token_id AND revoked_at IS NULL", {"token_id": token_id}
    )
    return row is not None


def bearer(header_value: str | None) -> str | None:
    if not header_value:
        return None
    scheme, _, value = header_value.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None
