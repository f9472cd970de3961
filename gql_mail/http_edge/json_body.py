"""Untrusted JSON (both front doors' HTTP bodies, websocket messages) decoded with a bounded nesting.

Python's `json` recurses per nesting level: a body of 100,000 `[` raised RecursionError (HTTP 500, a
traceback in the log). orjson stops at its own limit with an error, but what it returns still recursed
through graphql-core and our services, so the depth is bounded lower, and before any parsing, by a linear
scan: a body with no more `[`/`{` in all than the limit cannot be too deep (the common case, and every
base64 attachment), otherwise strings are cut out and the brackets counted. Every failure is
`MalformedJson`, a `JSONDecodeError`, so Strawberry's own paths treat it as a bad body.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# A JSON string, escapes included; cut out before counting brackets (they may contain any).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_OPEN = frozenset(b"[{")


class MalformedJson(json.JSONDecodeError):
    """The text is not JSON we accept; the message says why, for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "", 0)
        self.reason = message

    def __str__(self) -> str:
        return self.reason


def too_deep(data: bytes, limit: int) -> bool:
    """Whether arrays and objects in `data` nest deeper than `limit` (strings do not count)."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False
    depth = 0
    for byte in brackets:
        if byte in _OPEN:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def decode(text: str | bytes, max_depth: int) -> Any:
    """The value of a JSON text, or MalformedJson (invalid JSON or UTF-8, or nested over `max_depth`)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if too_deep(data, max_depth):
        raise MalformedJson(f"JSON nested deeper than {max_depth} levels")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(f"invalid JSON: {exc}") from None
