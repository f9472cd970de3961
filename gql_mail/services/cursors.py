"""Cursor paging's two rules, once for every connection: how many rows a page may ask for, and what a
cursor is.

A cursor is opaque to clients (base64url of a kind tag and the position's key) so its content can change
without breaking them; the kind tag keeps an accounts cursor from being taken for an outbox one. A cursor
that does not decode, or is of another kind, is the client's mistake: BAD_USER_INPUT on `after`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from gql_mail.services.errors import BadInput

DEFAULT_FIRST = 50
MAX_FIRST = 500
_MAX_CURSOR = 1024

T = TypeVar("T")


def check_first(first: int) -> int:
    if not 1 <= first <= MAX_FIRST:
        raise BadInput(f"first must be between 1 and {MAX_FIRST}", field="first")
    return first


def encode(kind: str, *parts: str) -> str:
    text = "\x1f".join((kind, *parts))
    return base64.urlsafe_b64encode(text.encode()).decode("ascii").rstrip("=")


def decode(kind: str, cursor: str, count: int) -> list[str]:
    """The `count` parts of a cursor made by `encode(kind, ...)`."""
    try:
        if len(cursor) > _MAX_CURSOR:
            raise ValueError("too long")
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadInput("after is not a cursor this listing made", field="after") from None
    tag, *parts = text.split("\x1f")
    if tag != kind or len(parts) != count or not all(parts):
        raise BadInput("after is not a cursor this listing made", field="after")
    return parts


@dataclass(frozen=True)
class CursorPage(Generic[T]):
    """One page of a connection: its rows with their cursors, in order, and whether more follow."""

    edges: Sequence[tuple[str, T]]
    has_next: bool

    @property
    def end_cursor(self) -> str | None:
        return self.edges[-1][0] if self.edges else None
