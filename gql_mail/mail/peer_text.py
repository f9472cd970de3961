"""Text a peer sent us (a reply, a greeting, an exception's wording), made safe to store and to show.

A peer's bytes are not ours to trust. aiosmtplib decodes replies with ``surrogateescape``, so one
Latin-1 byte ("250 Message accept\\xe9 \\xe0 la livraison", as many European servers answer) arrives as
a lone surrogate; SQLite's driver, asyncpg and orjson all refuse it, and the record that carries it
fails. PostgreSQL also refuses NUL in text. So every such text is passed through ``peer_text`` once,
where it enters (``gql_mail.mail``: reply texts, ``MailError``, the IMAP response text; the webhook
worker's network error), and whatever is stored or emitted after that is valid Unicode:

- an undecodable byte (a ``surrogateescape``'d one, or a byte of ``bytes`` input that isn't UTF-8)
  becomes U+FFFD; bytes that do form UTF-8 are decoded (a string decoded byte by byte comes back whole);
- any other lone surrogate becomes U+FFFD;
- whitespace of any kind (CR, LF, tab, U+2028, ...) runs become one space: a reply is shown on one line;
- other control characters (C0 including NUL, DEL, C1) are dropped;
- the result is at most ``MAX_PEER_TEXT`` characters; a longer one is cut and ends with ``TRUNCATED``.

``peer_text`` is idempotent, so text built from already-clean pieces may go through it again.

``peer_excerpt`` cuts shorter, for what a peer says before it has shown it speaks the protocol at all: a
greeting, a line that is no reply. The host and port are the customer's to choose, so that peer may be any
service (an SSH daemon, an internal admin port), and an error that quoted it whole would read its banner back
to whoever pointed an account at it: such text is shown as at most ``EXCERPT`` characters, and a line that is
not the protocol at all as at most ``FOREIGN_EXCERPT``.
"""

from __future__ import annotations

import re

__all__ = ["EXCERPT", "FOREIGN_EXCERPT", "MAX_PEER_TEXT", "TRUNCATED", "peer_excerpt", "peer_text"]

# 2,000 characters: an SMTP reply line is at most 512 octets (RFC 5321 4.5.3.1.5) and real multi-line
# replies (a 550 with a policy URL) stay well under this; an IMAP response text is one line. More than
# this is a misbehaving peer, and a record (a message's last error, an event) should not carry it.
MAX_PEER_TEXT = 2000
TRUNCATED = " …[truncated]"

# Enough for a greeting's gist ("220 mx.example.com ESMTP Postfix"), too little for a service's self-portrait.
EXCERPT = 80
# A line that is not the protocol: enough to tell what answered ("SSH-2.0-OpenSSH…"), not its version.
FOREIGN_EXCERPT = 16
CUT = "…"

# Input beyond this many characters can't show in the result (every kept character is at least one
# input character, and whitespace runs shrink only to one space), so a huge input is cut before cleaning.
_READ_AT_MOST = 4 * MAX_PEER_TEXT

# Surrogates that `surrogateescape` did not make (those are U+DC80..U+DCFF, one per undecodable byte).
_OTHER_SURROGATES = re.compile("[\ud800-\udc7f\udd00-\udfff]")
# C0 controls other than whitespace, DEL and C1 controls (whitespace among them is handled by split()).
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")


def peer_text(value: str | bytes | bytearray) -> str:
    """``value`` as valid Unicode on one line, without control characters, at most ``MAX_PEER_TEXT`` long."""
    cut = len(value) > _READ_AT_MOST
    if cut:
        value = value[:_READ_AT_MOST]
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("utf-8", "replace")
    elif value.isascii():
        text = value  # the common case: nothing to decode
    else:
        text = _OTHER_SURROGATES.sub("\ufffd", value)
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = " ".join(_CONTROLS.sub("", text).split())
    if cut or len(text) > MAX_PEER_TEXT:
        text = text[: MAX_PEER_TEXT - len(TRUNCATED)] + TRUNCATED
    return text


def peer_excerpt(value: str | bytes | bytearray, limit: int = EXCERPT) -> str:
    """``peer_text(value)`` cut to at most ``limit`` characters, the last one ``CUT`` when it was cut."""
    text = peer_text(value[: 4 * limit])
    if len(text) > limit or len(value) > 4 * limit:
        text = text[: limit - len(CUT)] + CUT
    return text
