"""Every error answer of the REST API, in the shape of Hapi's Boom: `{statusCode, error, message}`, plus
`code` where EmailEngine has one, and `fields: [{message, key}]` for invalid input.

The one translation of the services' coded errors (services/errors.py) to HTTP:

    BadInput            400 "Invalid input", fields [{message, key}] (key: the leaf of the field's path)
    NotFound            404 (EmailEngine's texts for an account and an outbox entry)
    Conflict            409
    AccountNotReady     503, `code` and `state` as EmailEngine's not-usable account (see NOT_READY)
    PayloadTooLarge     413
    Forbidden           403
    Unauthenticated     401
    anything else       500, message masked, logged with its traceback
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from gql_mail.models import AccountState
from gql_mail.rest.states import ee_state
from gql_mail.services.errors import (
    AccountNotReady,
    BadInput,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    Unauthenticated,
)

log = logging.getLogger("gql_mail.rest")

INVALID_INPUT = "Invalid input"
ACCOUNT_NOT_FOUND = "Account record was not found for requested ID"
QUEUE_ENTRY_NOT_FOUND = "Requested queue entry was not found"

# EmailEngine's answer for an account that cannot be used (lib/account/account-state.js): message, code.
NOT_READY: dict[str, tuple[str, str]] = {
    AccountState.NEW: ("Requested account is not yet initialized", "NotYetConnected"),
    AccountState.AUTHENTICATION_ERROR: ("Requested account can not be authenticated", "AuthenticationFails"),
    AccountState.CONNECT_ERROR: (
        "Can not establish server connection for requested account",
        "ConnectionError",
    ),
}
NOT_AVAILABLE = ("Requested account currently not available", "NoAvailable")


def boom(status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """A Boom body: `error` is the status's reason phrase; `extra` adds keys (code, fields, state...)."""
    body: dict[str, Any] = {"statusCode": status, "error": HTTPStatus(status).phrase, "message": message}
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers)


def unauthorized(message: str) -> JSONResponse:
    return boom(401, message, headers={"WWW-Authenticate": "Bearer"})


def invalid_input(fields: Sequence[dict[str, str]]) -> JSONResponse:
    return boom(400, INVALID_INPUT, fields=list(fields))


def _leaf(path: str) -> str:
    """Joi's `context.key`: the last name of a path such as "smtp.auth.user" or "attachments[0].content"."""
    return re.sub(r"\[\d+\]$", "", path.rpartition(".")[2]) or path


def from_service_error(exc: ServiceError) -> JSONResponse:
    if isinstance(exc, BadInput):
        if exc.field is None:
            return boom(400, exc.message)
        return invalid_input([{"message": exc.message, "key": _leaf(exc.field)}])
    if isinstance(exc, NotFound):
        message = {"account": ACCOUNT_NOT_FOUND, "queueId": QUEUE_ENTRY_NOT_FOUND}.get(exc.field or "")
        return boom(404, message or exc.message)
    if isinstance(exc, AccountNotReady):
        message, code = NOT_READY.get(exc.state, NOT_AVAILABLE)
        return boom(503, message, code=code, state=ee_state(exc.state))
    if isinstance(exc, Conflict):
        return boom(409, exc.message)
    if isinstance(exc, PayloadTooLarge):
        return boom(413, exc.message)
    if isinstance(exc, Forbidden):
        return boom(403, exc.message)
    if isinstance(exc, Unauthenticated):
        return unauthorized(exc.message)
    return internal_error(exc)


def internal_error(exc: BaseException) -> JSONResponse:
    log.error("unexpected error in a REST request", exc_info=exc)
    return boom(500, "An internal server error occurred")


def _label(loc: Sequence[int | str]) -> str:
    """Joi's label of a nested value: `to[0].address`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "value"


def _message(error: Any, label: str) -> str:
    kind = error["type"]
    if kind == "missing":
        return f'"{label}" is required'
    if kind == "extra_forbidden":
        return f'"{label}" is not allowed'
    if kind == "unsupported":
        return f'"{label}" is not supported by gql-mail'
    text = str(error["msg"])
    if text.startswith("Input should"):
        text = "must" + text[len("Input should") :]
    elif text.startswith("Value error, "):
        text = text[len("Value error, ") :]
    return f'"{label}" {text}'


def from_validation_error(exc: ValidationError) -> JSONResponse:
    """Pydantic's errors as EmailEngine's (Joi's) `fields`: one entry per wrong value."""
    fields = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [part for part in error["loc"] if isinstance(part, int | str)]
        label = _label(loc)
        names = [part for part in loc if isinstance(part, str)]
        fields.append({"message": _message(error, label), "key": names[-1] if names else "value"})
    return invalid_input(fields)
