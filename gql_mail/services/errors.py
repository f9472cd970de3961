"""Errors that are safe to show a client, each with the contract's code.

    ServiceError (code)
    ├── BadInput            BAD_USER_INPUT (field: the input field at fault)
    ├── NotFound            NOT_FOUND
    ├── Conflict            CONFLICT
    ├── AccountNotReady     ACCOUNT_NOT_READY
    ├── PayloadTooLarge     PAYLOAD_TOO_LARGE
    ├── Forbidden           FORBIDDEN
    └── Unauthenticated     UNAUTHENTICATED

Anything else raised below the API is unexpected and gets masked as INTERNAL_SERVER_ERROR.
"""

from __future__ import annotations


class ServiceError(Exception):
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BadInput(ServiceError):
    code = "BAD_USER_INPUT"


class NotFound(ServiceError):
    code = "NOT_FOUND"


class Conflict(ServiceError):
    code = "CONFLICT"


class AccountNotReady(ServiceError):
    """`state`: the account's state (an `AccountState` value), for front doors that name it in a code."""

    code = "ACCOUNT_NOT_READY"

    def __init__(self, message: str, *, field: str | None = None, state: str) -> None:
        super().__init__(message, field=field)
        self.state = state


class PayloadTooLarge(ServiceError):
    code = "PAYLOAD_TOO_LARGE"


class Forbidden(ServiceError):
    code = "FORBIDDEN"


class Unauthenticated(ServiceError):
    code = "UNAUTHENTICATED"
