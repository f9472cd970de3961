"""mail/raw_message.py on its own: what a ready message becomes, and hostile input refused or survived
with a ComposeError naming the field, never another exception."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gql_mail.mail.compose import ComposeError
from gql_mail.mail.raw_message import MAX_HEADER_SECTION, Envelope, prepare_raw

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def prepared(raw: bytes, envelope: Envelope | None = None, message_id: str | None = None) -> bytes:
    return prepare_raw(raw, envelope=envelope, message_id=message_id, date=NOW, make_id=lambda: "fixed").raw


def test_only_the_named_headers_change() -> None:
    date = b"Date: Tue, 1 Dec 2026 10:00:00 +0000\r\n"
    raw = b"X-First: 1\r\nFrom: a@example.com\r\nTo: b@example.org\r\n" + date + b"\r\nx"
    assert prepared(raw) == (
        b"X-First: 1\r\nFrom: a@example.com\r\nTo: b@example.org\r\n"
        + date
        + b"Message-ID: <fixed@example.com>\r\nMIME-Version: 1.0\r\n\r\nx"
    )


def test_a_message_of_headers_only_gets_an_empty_body() -> None:
    composed = prepare_raw(
        b"From: a@example.com\nTo: b@example.org", envelope=None, message_id=None, date=NOW
    )
    assert composed.raw.endswith(b"\r\n\r\n")
    assert composed.envelope_to == ("b@example.org",)


def test_non_ascii_header_bytes_are_kept_and_read_safely() -> None:
    # Latin-1 in a display name, UTF-8 in the subject: neither fails, both are passed on as they are.
    raw = b"From: J\xe9r\xf4me <a@example.com>\r\nTo: b@example.org\r\nSubject: \xc3\xbc\r\n\r\nx"
    out = prepared(raw)
    assert b"From: J\xe9r\xf4me <a@example.com>\r\n" in out and b"Subject: \xc3\xbc\r\n" in out


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"", "raw"),
        (b"\r\n\r\nbody", "raw"),
        (b" starts with a continuation\r\n\r\n", "raw"),
        (b"Bad Name: x\r\nFrom: a@example.com\r\n\r\n", "raw"),
        (b"From: a@example.com\r\nTo: b@example.org\r\nX: " + b"y" * MAX_HEADER_SECTION + b"\r\n\r\n", "raw"),
        (b"From: a@example.com\r\nTo: b@example.org\r\nX: " + b"y" * MAX_HEADER_SECTION, "raw"),
        (b"From: <>\r\nTo: b@example.org\r\n\r\n", "envelope"),
        (b"From: a@example.com\r\nTo: undisclosed-recipients:;\r\n\r\n", "envelope"),
    ],
)
def test_what_is_not_a_message_is_refused_by_field(raw: bytes, field: str) -> None:
    with pytest.raises(ComposeError) as caught:
        prepared(raw)
    assert caught.value.field == field


def test_a_given_envelope_spares_the_headers_from_being_read() -> None:
    raw = b"From: not an address\r\nTo: neither\r\n\r\nx"
    composed = prepare_raw(
        raw, envelope=Envelope("a@example.com", ("b@example.org",)), message_id=None, date=NOW
    )
    assert (composed.envelope_from, composed.envelope_to) == ("a@example.com", ("b@example.org",))
