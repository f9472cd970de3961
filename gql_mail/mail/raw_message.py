"""A ready RFC 5322 message (EmailEngine's submit `raw`), made into what is stored and sent.

EmailEngine takes such a message as it is and changes only a few headers (lib/get-raw-email.js); so does
this module, and the body is kept byte for byte (line breaks made CRLF, as SMTP carries them):

* Message-ID: replaced by a given `messageId`, else kept, else added as `<uuid@from-domain>`;
* Date and MIME-Version: added when missing (Date is the scheduled time of a scheduled message);
* Bcc: removed. Its recipients travel in the envelope only, as with a composed message (gql-mail never
  stores a Bcc header, so neither the SMTP server nor the Sent copy can leak it);
* the envelope is the given one, else From and To + Cc + Bcc of the message's headers.

The header section is split into fields here (a field is a line and the lines that continue it; RFC 5322
2.2) only to drop or replace whole fields; field values are read and written by the `email` package.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.policy import SMTP
from email.utils import format_datetime, getaddresses

from gql_mail.mail.compose import (
    Composed,
    ComposeError,
    new_message_id,
    normalise_message_id,
    validate_address,
)

__all__ = ["Envelope", "MAX_HEADER_SECTION", "MAX_SUBJECT", "prepare_raw", "settle_envelope"]

# A header section larger than this is refused: a submitted message is a new one, without the trace
# fields of a relayed message, and the `email` package's header parsers are not linear in the worst case.
MAX_HEADER_SECTION = 256 * 1024
MAX_SUBJECT = 16 * 1024  # the longest subject a submission may have (services/submission.py) or stores
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
_LINE_BREAK = re.compile(rb"\r?\n")
_FOLD = re.compile(r"\r?\n")


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope as given: `from_` None takes the From header's address, an empty `to` the
    message's recipients."""

    from_: str | None = None
    to: tuple[str, ...] = ()


def _split(raw: bytes) -> tuple[bytes, bytes]:
    """The header section (without its closing empty line) and the body (without it too)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(separator, 0, MAX_HEADER_SECTION + len(separator))
        if end != -1:
            return raw[:end], raw[end + len(separator) :]
    if len(raw) > MAX_HEADER_SECTION:
        raise ComposeError(f"raw: the header section is over {MAX_HEADER_SECTION} bytes", "raw")
    return raw, b""


def _fields(section: bytes) -> list[bytes]:
    """The header fields, each with its continuation lines (CRLF-joined, no final CRLF)."""
    fields: list[list[bytes]] = []
    for line in _LINE_BREAK.split(section):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name.rstrip(b" \t")):
            raise ComposeError("raw is not an RFC 5322 message (a header line without a field name)", "raw")
        fields.append([line])
    if not fields:
        raise ComposeError("raw is not an RFC 5322 message (no header fields)", "raw")
    return [b"\r\n".join(lines) for lines in fields]


def _name(field: bytes) -> str:
    return field.partition(b":")[0].rstrip(b" \t").decode("ascii").lower()


def _value(field: bytes) -> str:
    """The unfolded value; bytes that are not ASCII read as UTF-8 (RFC 6532), never failing."""
    return _FOLD.sub("", field.partition(b":")[2].decode("utf-8", "replace")).strip()


def _addresses(fields: Sequence[bytes], names: set[str], field: str) -> list[str]:
    values = [_value(f) for f in fields if _name(f) in names]
    return [validate_address(address, field) for _, address in getaddresses(values) if address]


def settle_envelope(
    given: Envelope | None, *, from_: Callable[[], str | None], to: Callable[[], Sequence[str]]
) -> tuple[str, tuple[str, ...]]:
    """The envelope sender and recipients: the given ones, checked, else what `from_` and `to` read from the
    message (called only then: a message's odd header does not matter when the envelope is given)."""
    given = given or Envelope()
    sender = validate_address(given.from_, "envelope.from") if given.from_ is not None else from_()
    if not sender:
        raise ComposeError("no sender: give a From header or envelope.from", "envelope")
    recipients = [validate_address(a, "envelope.to") for a in given.to] if given.to else to()
    if not recipients:
        raise ComposeError("no recipients: give To, Cc or Bcc headers, or envelope.to", "envelope")
    return sender, _unique(recipients)


def _unique(addresses: Sequence[str]) -> tuple[str, ...]:
    """Each address once (compared case-insensitively), as first spelled, in order."""
    first: dict[str, str] = {}
    for address in addresses:
        first.setdefault(address.lower(), address)
    return tuple(first.values())


def _subject(fields: Sequence[bytes]) -> str | None:
    """The Subject as readers show it (encoded-words decoded by the `email` package), for listings."""
    value = next((_value(f) for f in fields if _name(f) == "subject"), None)
    if value is None:
        return None
    return str(SMTP.header_factory("subject", value[:MAX_SUBJECT]))[:MAX_SUBJECT]


def _header(name: str, value: str) -> bytes:
    """One header field as the `email` package folds it (CRLF, no final CRLF)."""
    return SMTP.fold_binary(name, value).rstrip(b"\r\n")


def prepare_raw(
    raw: bytes,
    *,
    envelope: Envelope | None,
    message_id: str | None,
    date: datetime,
    make_id: Callable[[], str] | None = None,
) -> Composed:
    """The stored form of `raw` and its envelope; ComposeError (field "raw" or "envelope") when it cannot
    be sent."""
    section, body = _split(raw)
    fields = _fields(section)
    envelope_from, envelope_to = settle_envelope(
        envelope,
        from_=lambda: next(iter(_addresses(fields, {"from"}, "raw")), None),
        to=lambda: _addresses(fields, {"to", "cc", "bcc"}, "raw"),
    )

    present = {_name(f) for f in fields}
    if message_id is not None:
        final_id = normalise_message_id(message_id, "messageId")
    elif "message-id" in present:
        given = next(_value(f) for f in fields if _name(f) == "message-id")
        final_id = normalise_message_id(given, "raw")
    else:
        final_id = new_message_id(envelope_from.rpartition("@")[2], make_id)

    kept = [f for f in fields if _name(f) not in {"bcc", "message-id"}]
    kept.append(_header("Message-ID", final_id))
    if "date" not in present:
        kept.append(_header("Date", format_datetime(date)))
    if "mime-version" not in present:
        kept.append(_header("MIME-Version", "1.0"))
    head = b"\r\n".join(kept) + b"\r\n\r\n"
    return Composed(
        raw=head + _LINE_BREAK.sub(b"\r\n", body),
        message_id=final_id,
        envelope_from=envelope_from,
        envelope_to=envelope_to,
        subject=_subject(fields),
    )
