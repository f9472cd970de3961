"""The DATA wire form gql-mail builds itself must be byte for byte what aiosmtplib would send."""

from __future__ import annotations

from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given
from hypothesis import strategies as st

from gql_mail.mail.smtp import wire_form

# Line ends of every kind, dots where they need doubling, and ordinary bytes around them.
PIECES = st.sampled_from(
    [b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"Subject: x", b" ", b"\xc3\xa9", b"\x00"]
)


def aiosmtplib_wire_form(raw: bytes) -> bytes:
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(raw)) + b".\r\n"


@given(st.lists(PIECES, max_size=40).map(b"".join))
def test_same_bytes_as_aiosmtplib(raw: bytes) -> None:
    assert wire_form(raw) == aiosmtplib_wire_form(raw)


def test_examples() -> None:
    assert wire_form(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    assert wire_form(b".lead\r\n\r\n.") == b"..lead\r\n\r\n..\r\n.\r\n"
    assert wire_form(b"bare\nline\rends") == b"bare\r\nline\r\nends\r\n.\r\n"
    assert wire_form(b"") == b"\r\n.\r\n"
