"""Mail errors: every SMTP/IMAP failure becomes one ``MailError`` value, classified here and only here.

```
Exception
 └── MailError                     .code .smtp_code .permanent .auth_failure .response
       code = EAUTH        login refused (535/534/530, IMAP NO on LOGIN)  -> the account is broken
              ECONNECTION  refused / reset / dropped (also mid-DATA), bad greeting
              ETIMEDOUT    connect or a command took longer than the bound
              ETLS         handshake or certificate verification failed; STARTTLS missing or refused
                           where TLS is required (``tls_policy``): no credential was sent
              EPROTOCOL    unexpected reply or missing capability
              EENVELOPE    MAIL FROM / RCPT TO refused (all recipients, for RCPT)
              EMESSAGE     DATA refused (content, size, policy)
              EPOLICY      the outbound policy forbids the server's address (nothing was sent to it)
              EOAUTH2      no OAuth2 access token: the provider refused the refresh (auth_failure) or
                           could not be reached (transient); raised by services/oauth2_tokens.py
```
``classify_smtp_exception`` / ``classify_imap_exception`` / ``classify_imap_login_refusal`` build
them; nothing else in the code base inspects aiosmtplib, aioimaplib, socket or ssl exceptions.

Why one place: the delivery worker decides retry vs give up from ``permanent`` and marks the
account from ``auth_failure``; if each call site guessed, the same 5xx would be retried in one
place and failed in another. The reply-code rule (4xx transient, 5xx permanent) has exceptions
that only the enhanced status code or the text reveal (Gmail's "550 5.4.5 daily sending quota" is
a 5xx that passes tomorrow); those live in ``_OVERRIDES`` and ``_TRANSIENT_TEXT`` (the idea of
nylas/sync-engine's table, without its HTTP codes).

Every text in a ``MailError`` (its message, the server's ``response``) and every reply ``reply_text``
builds has passed through ``peer_text``: a server's reply is the peer's bytes, and one undecodable byte
in it must not make the record that stores it fail (see ``gql_mail.mail.peer_text``). A greeting, or a
line that is no reply at all, is quoted through the shorter ``peer_excerpt``: the peer may be no mail
server at all, and its banner is not ours to show.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import aiosmtplib

from gql_mail.mail.peer_text import FOREIGN_EXCERPT, peer_excerpt, peer_text
from gql_mail.outbound import OutboundRefused

__all__ = [
    "MailError",
    "Throttle",
    "classify_throttle",
    "classify_imap_exception",
    "classify_imap_login_refusal",
    "classify_smtp_exception",
    "enhanced_status",
    "is_permanent_reply",
    "reply_text",
]


class MailError(Exception):
    """A classified mail failure; safe to store and show: it never carries credentials, and its texts
    are made valid and bounded here (they quote the server, or a library's wording of what it saw)."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        smtp_code: int | None = None,
        permanent: bool = False,
        auth_failure: bool = False,
        response: str | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        message = peer_text(message)
        super().__init__(message)
        self.message = message
        self.code = code
        self.smtp_code = smtp_code
        self.permanent = permanent
        self.auth_failure = auth_failure
        self.response = peer_text(response) if response is not None else None
        # Set when the reply says the *account* is sending too fast or is over a quota (see `Throttle`).
        self.throttle = throttle

    def __repr__(self) -> str:
        return (
            f"MailError({self.message!r}, code={self.code!r}, smtp_code={self.smtp_code!r}, "
            f"permanent={self.permanent!r}, auth_failure={self.auth_failure!r})"
        )


@dataclass(frozen=True)
class Throttle:
    """A reply that slows the account, not the message: the server refuses *this sender* for now (a rate or
    connection limit) or for the day (a daily quota). The message is fine and is retried without losing an
    attempt once the account's pause (services/pacing.py) ends."""

    daily: bool  # a daily quota: the pause lasts until the quota window ends
    retry_after: float | None  # seconds, when the reply says how long to wait ("try again in 5 minutes")
    reason: str  # the server's reply, as stored


# (reply codes, enhanced status or None, phrase in the lower-cased text or None, daily quota?)
# The first matching rule wins; a rule with both status and phrase needs both.
_THROTTLE_RULES: tuple[tuple[frozenset[int], str | None, str | None, bool], ...] = (
    # Gmail "550 5.4.5 Daily user sending quota exceeded" (also 552/554, and 4xx when softened):
    # https://support.google.com/a/answer/3726730 (Gmail SMTP errors and codes).
    (frozenset({421, 450, 451, 452, 550, 552, 554}), "5.4.5", None, True),
    # 5.7.x with a quota wording: Microsoft 365 "550 5.7.520 ... exceeded its daily sending limit"
    # (https://learn.microsoft.com/exchange/troubleshoot/email-delivery/send-receive-emails-socketerror),
    # Yahoo "554 5.7.x ... sending limit", Gmail's "daily user sending limit exceeded".
    (frozenset({550, 552, 554}), "5.7.*", "quota", True),
    (frozenset({550, 552, 554}), "5.7.*", "sending limit", True),
    (frozenset({550, 552, 554}), "5.7.*", "daily", True),
    # Exchange Online's submission quota: "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceeded".
    (frozenset({550, 552, 554}), None, "submissionquotaexceeded", True),
    # Gmail "421 4.7.0 Try again later, closing connection" and "4.7.28 ... unusual rate of unsolicited
    # mail" (https://support.google.com/a/answer/3726730).
    (frozenset({421, 450, 451, 452}), "4.7.0", None, False),
    (frozenset({421, 450, 451, 452}), "4.7.28", None, False),
    # Microsoft "451 4.7.500 Server busy. Please try again later"
    # (https://learn.microsoft.com/exchange/mail-flow-best-practices/non-delivery-reports-in-exchange-online/
    # fix-error-code-451-4-7-500-699-asxxx-in-exchange-online); "432 4.3.2 STOREDRV.ClientSubmit; sender
    # thread limit exceeded" (too many concurrent connections), and 4.3.2 "try later" (RFC 3463: system not
    # accepting network messages). A bare "421 4.3.2 Service not available" is the server's state, not the
    # account's: an ordinary transient failure.
    (frozenset({421, 450, 451, 452}), "4.7.500", None, False),
    (frozenset({421, 432, 450, 451, 452}), "4.3.2", "try later", False),
    (frozenset({421, 432, 450, 451, 452}), "4.3.2", "limit", False),
    # Wording alone, any enhanced status but 4.5.3 ("too many recipients" is this message's, not a rate).
    (frozenset({421, 450, 451, 452}), None, "too many", False),
    (frozenset({421, 450, 451, 452}), None, "try later", False),
    (frozenset({421, 450, 451, 452}), None, "unusual rate", False),
    (frozenset({421, 450, 451, 452}), None, "rate limit", False),
)

_RETRY_HINT_RE = re.compile(
    r"(?:try again|retry|wait|resume)\D{0,24}?(\d{1,6})\s*"
    r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
_MAX_RETRY_HINT = 86_400.0


def _retry_hint(text: str) -> float | None:
    match = _RETRY_HINT_RE.search(text)
    if match is None:
        return None
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)[0].lower()]
    return float(min(max(seconds, 1), _MAX_RETRY_HINT))


def _status_matches(status: str | None, wanted: str | None) -> bool:
    if wanted is None:
        return status != "4.5.3"
    if wanted.endswith(".*"):
        return status is not None and status.startswith(wanted[:-1])
    return status == wanted


def classify_throttle(code: int, message: str) -> Throttle | None:
    """The throttling a negative SMTP reply reports, if any (see `_THROTTLE_RULES`)."""
    status = enhanced_status(message)
    lowered = message.lower()
    for codes, wanted, phrase, daily in _THROTTLE_RULES:
        if code not in codes or not _status_matches(status, wanted):
            continue
        if phrase is not None and phrase not in lowered:
            continue
        return Throttle(daily=daily, retry_after=_retry_hint(message), reason=reply_text(code, message))
    return None


# (reply code, enhanced status) -> permanent?  Consulted before the 4xx/5xx rule.
# An enhanced status of None matches any enhanced status for that reply code.
_OVERRIDES: dict[tuple[int, str | None], bool] = {
    (550, "5.4.5"): False,  # Gmail: daily sending quota exceeded; passes once the quota resets
    (550, "5.3.2"): False,  # system not accepting network messages right now
    (550, "5.7.26"): True,  # unauthenticated sender (DMARC/SPF): permanent until DNS changes
    (552, "5.4.5"): False,  # quota, as above (some servers use 552)
    (554, "5.4.5"): False,
    (452, "4.5.3"): False,  # too many recipients: a smaller batch may pass
}

# Phrases that make a 5xx transient: rate limits reported with a permanent code.
_TRANSIENT_TEXT: tuple[str, ...] = (
    "exceeded recipient rate limit",
    "24-hour sending limit",
    "daily sending quota",
    "daily user sending quota",
    "try again later",
    "too many connections",
    "rate limit",
)

# Reply codes that mean "your login is wrong" rather than "this message is wrong".
_AUTH_CODES = frozenset({530, 534, 535, 538})

_ENHANCED_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


def enhanced_status(message: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply text ("5.1.1"), if any."""
    match = _ENHANCED_RE.match(message.strip())
    return match.group(0) if match else None


def is_permanent_reply(code: int, message: str = "") -> bool:
    """True when a negative reply means retrying the same message cannot succeed."""
    status = enhanced_status(message)
    for key in ((code, status), (code, None)):
        if key in _OVERRIDES:
            return _OVERRIDES[key]
    lowered = message.lower()
    if code >= 500 and any(phrase in lowered for phrase in _TRANSIENT_TEXT):
        return False
    # RFC 3463: the class digit of the enhanced code should agree with the reply; when a server
    # says "5xx 4.x.x" it is telling us the condition is temporary, so believe the detail.
    if status is not None and status.startswith("4."):
        return False
    return code >= 500


def reply_text(code: int, message: str) -> str:
    """A server reply as one line ("550 5.1.1 <x@y>: Recipient address rejected"), made safe to store."""
    return peer_text(f"{code} {message}")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it was raised from (aiosmtplib wraps OSError/SSLError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _transport_error(exc: BaseException) -> MailError | None:
    """Classify failures below the protocol (TLS, timeouts, sockets); shared by SMTP and IMAP."""
    for cause in _causes(exc):
        if isinstance(cause, OutboundRefused):
            # Not a login problem, and retrying changes nothing until the host, its DNS or the policy do.
            return MailError(str(cause), code="EPOLICY")
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = getattr(cause, "verify_message", None) or str(cause)
            return MailError(f"TLS certificate verification failed: {detail}", code="ETLS")
        if isinstance(cause, ssl.SSLError):
            return MailError(
                f"TLS negotiation failed: {getattr(cause, 'reason', None) or cause}", code="ETLS"
            )
    # Timeouts before OSError: TimeoutError is an OSError (and asyncio.TimeoutError is TimeoutError).
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, aiosmtplib.SMTPTimeoutError)):
        # aiosmtplib words its own ("Timed out waiting for server response"); asyncio's are empty.
        return MailError(str(exc) or "Timed out", code="ETIMEDOUT")
    if isinstance(exc, OSError):
        if isinstance(exc, aiosmtplib.SMTPException):  # already worded: "Error connecting to ..."
            return MailError(str(exc) or "Connection lost", code="ECONNECTION")
        reason = exc.strerror or str(exc) or type(exc).__name__
        return MailError(f"Connection failed: {reason}", code="ECONNECTION")
    return None


def _response_error(exc: aiosmtplib.SMTPResponseException) -> MailError:
    """Classify an SMTP reply the server actually sent; a throttling one is never permanent (it passes)."""
    error = _reply_error(exc)
    throttle = None if error.auth_failure else classify_throttle(exc.code, exc.message)
    if throttle is not None:
        error.throttle = throttle
        error.permanent = False
    return error


def _reply_error(exc: aiosmtplib.SMTPResponseException) -> MailError:
    """Classify an SMTP reply the server actually sent, by the command that drew it."""
    code, text = exc.code, exc.message
    response = reply_text(code, text)
    permanent = is_permanent_reply(code, text)

    if code == aiosmtplib.SMTPStatus.invalid_response:
        # No SMTP reply at all (aiosmtplib: "Malformed SMTP response line: <line>"): whatever listens there
        # is shown by its first few characters only (see `peer_excerpt`).
        line = text.partition("Malformed SMTP response line:")[2].strip() or text
        return MailError(f"Not an SMTP reply: {peer_excerpt(line, FOREIGN_EXCERPT)}", code="EPROTOCOL")
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        # A refusing greeting is about the server/account, not this message: retry later. Quoted as an
        # excerpt: this may be no mail server at all.
        greeting = peer_excerpt(response)
        return MailError(
            f"Server refused the connection: {greeting}",
            code="ECONNECTION",
            smtp_code=code,
            response=greeting,
        )
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError) or code in _AUTH_CODES:
        # 454 "temporary authentication failure" is the server's problem, not the password's.
        broken = code >= 500
        return MailError(
            f"Invalid login: {response}",
            code="EAUTH",
            smtp_code=code,
            permanent=broken,
            auth_failure=broken,
            response=response,
        )
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return MailError(
            f"Mail command failed: {response}",
            code="EENVELOPE",
            smtp_code=code,
            permanent=permanent,
            response=response,
        )
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        # RFC 5321 4.5.3.1.10: a 552 on RCPT (too many recipients) should be treated as 452.
        return MailError(
            f"Recipient command failed: {response}",
            code="EENVELOPE",
            smtp_code=code,
            permanent=permanent and code != 552,
            response=response,
        )
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return MailError(
            f"Message failed: {response}",
            code="EMESSAGE",
            smtp_code=code,
            permanent=permanent,
            response=response,
        )
    unexpected = peer_excerpt(response)
    return MailError(
        f"Unexpected server reply: {unexpected}",
        code="EPROTOCOL",
        smtp_code=code,
        permanent=permanent,
        response=unexpected,
    )


def _recipients_error(exc: aiosmtplib.SMTPRecipientsRefused) -> MailError:
    """All recipients refused: permanent only if every refusal was permanent."""
    refusals = [_response_error(refused) for refused in exc.recipients]
    first = refusals[0] if refusals else None
    listing = "; ".join(
        f"{refused.recipient}: {reply_text(refused.code, refused.message)}" for refused in exc.recipients
    )
    return MailError(
        f"Can't send mail - all recipients were rejected: {listing}",
        code="EENVELOPE",
        smtp_code=first.smtp_code if first else None,
        permanent=bool(refusals) and all(r.permanent for r in refusals),
        response=first.response if first else None,
        # Every recipient refused because the account is throttled: the account's pause, not the message's.
        throttle=first.throttle if refusals and all(r.throttle for r in refusals) and first else None,
    )


def classify_smtp_exception(exc: BaseException) -> MailError:
    """Turn anything aiosmtplib, the socket layer, asyncio or ssl raised into a ``MailError``.

    Order matters: aiosmtplib's timeout and connect errors are also ``OSError``/``ConnectionError``,
    and TLS failures arrive either raw (STARTTLS) or as the cause of a connect error (implicit TLS).
    """
    if isinstance(exc, MailError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return _recipients_error(exc)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _response_error(exc)
    transport = _transport_error(exc)
    if transport is not None:
        return transport
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return MailError(
            f"Server does not support a required extension: {exc}", code="EPROTOCOL", permanent=True
        )
    if isinstance(exc, UnicodeError):
        return MailError(f"Address can't be encoded for this server: {exc}", code="EENVELOPE", permanent=True)
    if isinstance(exc, ValueError):
        # aiosmtplib refuses addresses that would inject SMTP syntax (spaces, <, >, CR/LF).
        return MailError(f"Invalid envelope: {exc}", code="EENVELOPE", permanent=True)
    if isinstance(exc, aiosmtplib.SMTPException):
        return MailError(f"SMTP error: {exc}", code="EPROTOCOL")
    return MailError(f"Unexpected error: {type(exc).__name__}: {exc}", code="EPROTOCOL")


# RFC 5530 response codes on a refused IMAP LOGIN that say "not your password, try later".
_IMAP_TRANSIENT_CODES = ("[UNAVAILABLE]", "[INUSE]", "[SERVERBUG]", "[LIMIT]")


def classify_imap_login_refusal(text: str) -> MailError:
    """An IMAP ``NO``/``BAD`` answer to LOGIN/AUTHENTICATE: broken credentials unless it says otherwise."""
    transient = any(code in text.upper() for code in _IMAP_TRANSIENT_CODES)
    return MailError(
        f"Invalid login: {text}" if not transient else f"Login temporarily refused: {text}",
        code="EAUTH",
        permanent=not transient,
        auth_failure=not transient,
        response=text,
    )


def classify_imap_exception(exc: BaseException) -> MailError:
    """Turn anything aioimaplib, the socket layer, asyncio or ssl raised into a ``MailError``."""
    if isinstance(exc, MailError):
        return exc
    transport = _transport_error(exc)
    if transport is not None:
        return transport
    # aioimaplib's exceptions, matched by name so this module needs no untyped import.
    name = type(exc).__name__
    if name == "CommandTimeout":
        return MailError("Timed out waiting for the IMAP server", code="ETIMEDOUT")
    if name in {"Abort", "Error", "IncompleteRead", "AioImapException"}:
        return MailError(f"IMAP protocol error: {exc}", code="EPROTOCOL")
    return MailError(f"Unexpected error: {name}: {exc}", code="EPROTOCOL")
