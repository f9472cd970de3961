"""The throttling table in mail/errors.py: which replies slow the account, and for how long."""

from __future__ import annotations

import aiosmtplib
import pytest

from gql_mail.mail.errors import classify_smtp_exception, classify_throttle


@pytest.mark.parametrize(
    ("code", "text", "daily", "retry_after"),
    [
        (421, "4.7.0 Try again later, closing connection.", False, None),
        (421, "4.7.28 Our system has detected an unusual rate of unsolicited mail", False, None),
        (451, "4.7.500 Server busy. Please try again later from [1.2.3.4]", False, None),
        (432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", False, None),
        (451, "4.3.2 Please try later", False, None),
        (450, "Too many messages from you, try again in 10 minutes", False, 600.0),
        (452, "4.7.0 Rate limit reached; retry in 30 seconds", False, 30.0),
        (550, "5.4.5 Daily user sending quota exceeded.", True, None),
        (554, "5.7.0 Sending limit exceeded for today", True, None),
        (550, "5.7.1 Daily sending quota exceeded", True, None),
    ],
)
def test_throttling_replies(code: int, text: str, daily: bool, retry_after: float | None) -> None:
    throttle = classify_throttle(code, text)
    assert throttle is not None
    assert throttle.daily is daily
    assert throttle.retry_after == retry_after
    assert throttle.reason == f"{code} {text}"


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (451, "4.3.0 Try again later"),  # the server's trouble, not the account's pace
        (421, "4.3.2 Service not available, closing transmission channel"),
        (452, "4.5.3 Too many recipients"),  # this message's, a smaller batch passes
        (550, "5.1.1 <nobody@example.org>: Recipient address rejected"),
        (550, "5.7.26 Unauthenticated email is not accepted"),
        (250, "2.0.0 Ok"),
    ],
)
def test_other_replies_do_not_throttle(code: int, text: str) -> None:
    assert classify_throttle(code, text) is None


def test_a_throttling_reply_is_never_permanent() -> None:
    error = classify_smtp_exception(aiosmtplib.SMTPDataError(550, "5.4.5 Daily user sending quota exceeded."))
    assert error.throttle is not None and error.throttle.daily
    assert not error.permanent
    refused = classify_smtp_exception(aiosmtplib.SMTPDataError(550, "5.1.1 no such user"))
    assert refused.throttle is None and refused.permanent


def test_a_refusing_greeting_can_throttle() -> None:
    error = classify_smtp_exception(aiosmtplib.SMTPConnectResponseError(421, "4.7.0 Try again later"))
    assert error.throttle is not None and not error.permanent
