"""Secrets never reach a log record, whoever logs it: our modules, aioimaplib, aiosmtplib, httpx, anyone.

Two rules, applied to a record's formatted message, its traceback text and its stack text:

1. **Shapes that carry credentials**: the arguments of an IMAP ``LOGIN``, of an IMAP ``AUTHENTICATE``
   and of an SMTP ``AUTH`` after the mechanism, a ``Bearer`` token or an ``access_token=`` in a URL's
   query, the password of a URL
   (``scheme://user:password@host``). These hold whatever the secret is and however it was quoted.
   aioimaplib logs every command it sends at debug level and only masks the password as given, so a
   password with ``"`` or ``\\`` (quoted on the wire) or an XOAUTH2 token (base64 on the wire) went out
   whole; httpx logs URLs with their password.
2. **Values known to be secret** (`SecretRegistry`): a mail client registers the credentials it is about to
   use (`credentials_in_use`) and the runtime registers ``GQL_MAIL_SECRET``; every form they take on the
   wire or in a ``repr`` (IMAP-quoted, Python-escaped, base64, inside a SASL PLAIN/XOAUTH2 string) is
   replaced wherever it appears: a bare base64 line of SMTP ``AUTH LOGIN``, a library's exception text.
   Values shorter than `MIN_SECRET_LENGTH` are left to rule 1: redacting "abc" everywhere would blind logs.

How it is installed: `install()` wraps the log record factory, so every record of every logger is
redacted when it is made, before any handler, filter or formatter sees it. A `logging.Filter` on a logger
misses the records of its child loggers (``gql_mail.services.accounts`` is not filtered by a filter on
``gql_mail``), and one on a handler misses handlers added later (uvicorn's, an operator's, pytest's); the
factory has neither gap. `SecretFilter` is that same redaction as a filter, for handler configurations that
want it explicitly. The registry is process-wide because logging is.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "SecretFilter",
    "SecretRegistry",
    "credentials_in_use",
    "install",
    "redact",
    "register_secret",
    "registry",
]

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4

# An IMAP command needs a tag (letters then digits here, as aioimaplib and most clients make them), which
# keeps prose such as "refuses plaintext LOGIN (LOGINDISABLED)" intact.
_IMAP_LOGIN = re.compile(r"(\b[A-Za-z]*\d+ (?i:LOGIN) )[^\r\n]*")
_IMAP_AUTHENTICATE = re.compile(r"(\b[A-Za-z]*\d+ (?i:AUTHENTICATE) [\w-]+)[^\r\n]*")
# SMTP AUTH as a command (at the start, or after a quote or space), not the "250-AUTH PLAIN" capability.
_SMTP_AUTH = re.compile(r"((?:^|(?<=[\s'\"]))(?<!\d[ -])(?i:AUTH) [\w-]+) [^\r\n]+")
_BEARER = re.compile(r"(\b(?i:Bearer)\s+)[^\s\x01'\",]+")
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")
# A token in a URL's query, as the REST API accepts it (EmailEngine's `?access_token=`): the access log
# writes every request's path and query.
_QUERY_TOKEN = re.compile(r"([?&](?i:access_token)=)[^&#\s'\"]+")


def _redact_shapes(text: str) -> str:
    text = _IMAP_LOGIN.sub(rf"\g<1>{REDACTED}", text)
    text = _IMAP_AUTHENTICATE.sub(rf"\g<1> {REDACTED}", text)
    text = _SMTP_AUTH.sub(rf"\g<1> {REDACTED}", text)
    text = _BEARER.sub(rf"\g<1>{REDACTED}", text)
    text = _QUERY_TOKEN.sub(rf"\g<1>{REDACTED}", text)
    return _URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", text)


def _escaped(value: str) -> set[str]:
    """How ``value`` looks inside a Python ``repr`` of a str or of its UTF-8 bytes (as aioimaplib logs the
    lines it sends), with either quote character delimiting the whole."""
    forms: set[str] = set()
    for whole in (repr(value + "'\""), repr((value + "'\"").encode())):
        inner = whole[whole.index("'") + 1 : -len("\\'\"'")]  # drop the prefix/quotes and the added suffix
        forms.update((inner, inner.replace("\\'", "'")))
    return forms


def secret_forms(value: str) -> set[str]:
    """Every text under which ``value`` may show up in a log line."""
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')  # an IMAP quoted string's content
    forms = {value, quoted, *_escaped(value), *_escaped(quoted)}
    encoded = value.encode()
    forms.update(
        (base64.b64encode(encoded).decode("ascii"), base64.urlsafe_b64encode(encoded).decode("ascii"))
    )
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class SecretRegistry:
    """Secret values the process holds now, with a count per value so that two sessions using the same
    password can end in any order. Thread-safe: peers and executors log from other threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._forms: tuple[str, ...] = ()

    def add(self, values: Iterable[str]) -> list[str]:
        """Register ``values`` (with their forms); returns what to pass to `remove`."""
        forms = [form for value in values if len(value) >= MIN_SECRET_LENGTH for form in secret_forms(value)]
        with self._lock:
            for form in forms:
                self._counts[form] = self._counts.get(form, 0) + 1
            self._refresh()
        return forms

    def remove(self, forms: Iterable[str]) -> None:
        with self._lock:
            for form in forms:
                left = self._counts.get(form, 0) - 1
                if left > 0:
                    self._counts[form] = left
                else:
                    self._counts.pop(form, None)
            self._refresh()

    def _refresh(self) -> None:
        # Longest first: a SASL string's base64 must go before a shorter value that may lie inside it.
        self._forms = tuple(sorted(self._counts, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for form in self._forms:  # one tuple read: no lock needed against a concurrent refresh
            if form in text:
                text = text.replace(form, REDACTED)
        return text


registry = SecretRegistry()


def register_secret(value: str | None) -> None:
    """A secret the process keeps for its whole life (``GQL_MAIL_SECRET``)."""
    if value:
        registry.add([value])


def sasl_strings(user: str | None, password: str | None, token: str | None) -> list[str]:
    """The SASL exchanges that carry these credentials (PLAIN, XOAUTH2); their base64 is what is sent."""
    strings = []
    if password:
        strings.append(f"\0{user or ''}\0{password}")
    if token:
        strings.append(f"user={user or ''}\x01auth=Bearer {token}\x01\x01")
    return strings


@contextmanager
def credentials_in_use(user: str | None, password: str | None, token: str | None) -> Iterator[None]:
    """Redact this password/token (and the SASL strings built from them) while a client logs in."""
    values = [v for v in (password, token) if v] + sasl_strings(user, password, token)
    forms = registry.add(values)
    try:
        yield
    finally:
        registry.remove(forms)


def redact(text: str) -> str:
    """``text`` without any credential shape or registered secret."""
    return registry.redact(_redact_shapes(text))


class SecretFilter(logging.Filter):
    """Redacts a record in place (message, traceback, stack); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it; show the template, redacted
            message = str(record.msg)
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_installed = threading.Lock()
_factory_installed = False


def install() -> None:
    """Redact every log record of this process from now on (idempotent)."""
    global _factory_installed
    with _installed:
        if _factory_installed:
            return
        make_record = logging.getLogRecordFactory()
        secret_filter = SecretFilter()

        def redacting_factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            secret_filter.filter(record)
            return record

        logging.setLogRecordFactory(redacting_factory)
        _factory_installed = True
