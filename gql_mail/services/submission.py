"""A submitted message's input, and turning it into the bytes that are stored.

Everything here costs time in proportion to the input, so the order matters:

1. `check_bounds` looks only at sizes (counts and lengths, no parsing, no encoding) and refuses what is
   over a limit before anything else is done with it: BAD_USER_INPUT for too many or too long items,
   PAYLOAD_TOO_LARGE for bodies and attachments over `max_message_bytes`. The limits are in README
   ("Limits").
2. `compose_message` decodes the attachments and composes the message: inline when it is cheap, in a
   worker thread when its estimated cost is above `INLINE_COMPOSE_COST`, so a large message never holds
   the event loop (every SMTP session and websocket of the process) for more than a few milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from io import BytesIO
from typing import Any

from gql_mail.config import Settings
from gql_mail.mail.compose import Address, Attachment, Composed, ComposeError, Draft, compose
from gql_mail.mail.preview_text import MAX_PREVIEW_TEXT, with_preview_text
from gql_mail.mail.raw_message import MAX_SUBJECT, Envelope, prepare_raw, settle_envelope

__all__ = ["AttachmentSpec", "Envelope", "Sender", "SubmitSpec", "check_bounds", "compose_message"]
from gql_mail.services.errors import BadInput, PayloadTooLarge

MAX_REPLY_TO = 20
MAX_HEADER_NAME = 128
MAX_HEADER_VALUE = 16 * 1024
MAX_ADDRESS = 320  # RFC 3696 errata: 64 + 1 + 255
MAX_HEADER_TEXT = 998  # display names, messageId, attachment filename/contentType/cid: one header line

# Estimated compose cost, in units of about one body byte (measured: a body byte ~0.06 µs, an extra
# header ~0.3 ms plus ~2 µs per character when it needs encoded-words, a recipient ~0.05 ms). Above this
# the compose runs in a worker thread; below it, the thread hand-off would cost more than the work.
INLINE_COMPOSE_COST = 32 * 1024
_HEADER_COST = 4096
_HEADER_CHAR_COST = 32
_ADDRESS_COST = 1024
# Attachment base64 is decoded this many characters per call: one C call holds the GIL throughout.
_DECODE_CHUNK = 1 << 18


@dataclass(frozen=True)
class AttachmentSpec:
    content: str
    filename: str | None = None
    content_type: str | None = None
    cid: str | None = None
    disposition: str | None = None  # "inline" | "attachment"; None: inline with a cid, else attachment


@dataclass(frozen=True)
class SubmitSpec:
    from_: Address | None = None
    to: Sequence[Address] = ()
    cc: Sequence[Address] = ()
    bcc: Sequence[Address] = ()
    reply_to: Sequence[Address] = ()
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    attachments: Sequence[AttachmentSpec] = ()
    headers: Any = None
    message_id: str | None = None
    send_at: datetime | None = None
    delivery_attempts: int | None = None
    copy: bool | None = None
    idempotency_key: str | None = None
    # EmailEngine's hidden preheader, put into the html (mail/preview_text.py); ignored without html.
    preview_text: str | None = None
    # A ready RFC 5322 message in base64, sent as it is (mail/raw_message.py): exclusive with the fields
    # that would compose one.
    raw: str | None = None
    # The SMTP envelope, over the one read from the message's headers.
    envelope: Envelope | None = None
    # The Sent folder of this message's copy, over the account's.
    sent_mail_path: str | None = None


# What `raw` replaces: given with it, a field would be silently left out of the message it does not build.
_COMPOSED_ONLY = (
    *("from_", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "attachments", "headers"),
    "preview_text",
)
_FIELD_NAMES = {"from_": "from", "reply_to": "replyTo", "preview_text": "previewText"}


@dataclass(frozen=True)
class Sender:
    """What a submission needs of its account."""

    email: str
    name: str | None
    state: str
    imap_disabled: bool


def _at_most(value: str | None, limit: int, field: str, what: str) -> None:
    if value is not None and len(value) > limit:
        raise BadInput(f"{what} is longer than {limit} characters", field=field)


def _check_addresses(addresses: Sequence[Address], field: str) -> None:
    for address in addresses:
        _at_most(address.address, MAX_ADDRESS, field, "an address")
        _at_most(address.name, MAX_HEADER_TEXT, field, "a display name")


def _check_headers(settings: Settings, headers: Any) -> None:
    if headers is None:
        return
    if not isinstance(headers, Mapping):
        raise BadInput("headers must be an object of header name to value", field="headers")
    if len(headers) > settings.max_headers:
        raise BadInput(f"at most {settings.max_headers} extra headers", field="headers")
    total = 0
    for name, value in headers.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise BadInput(f"header {str(name)[:40]!r} must have a string value", field="headers")
        name, value = str(name), str(value)
        _at_most(name, MAX_HEADER_NAME, "headers", "a header name")
        _at_most(value, MAX_HEADER_VALUE, "headers", f"the value of header {name!r}")
        # Bytes as sent (UTF-8; a lone surrogate is refused later, by compose, with its own message).
        total += len(name.encode("utf-8", "surrogatepass")) + len(value.encode("utf-8", "surrogatepass"))
        if total > settings.max_headers_bytes:
            raise BadInput(
                f"extra headers are over {settings.max_headers_bytes} bytes (names and values)",
                field="headers",
            )


def _check_raw(settings: Settings, spec: SubmitSpec) -> None:
    assert spec.raw is not None
    for name in _COMPOSED_ONLY:
        if getattr(spec, name):
            field = _FIELD_NAMES.get(name, name)
            raise BadInput(f"{field} cannot be given with raw: the raw message is sent as it is", field=field)
    if len(spec.raw) * 3 // 4 > settings.max_message_bytes:
        limit = settings.max_message_bytes
        raise PayloadTooLarge(f"raw exceeds the message limit of {limit} bytes", field="raw")


def _check_envelope(settings: Settings, envelope: Envelope | None) -> None:
    if envelope is None:
        return
    if len(envelope.to) > settings.max_recipients:
        raise BadInput(f"at most {settings.max_recipients} envelope recipients", field="envelope.to")
    _at_most(envelope.from_, MAX_ADDRESS, "envelope.from", "an address")
    for address in envelope.to:
        _at_most(address, MAX_ADDRESS, "envelope.to", "an address")


def check_bounds(settings: Settings, spec: SubmitSpec) -> None:
    """Every list, map and text of a submission within its limit: sizes only, before any work on them."""
    _check_envelope(settings, spec.envelope)
    _at_most(spec.sent_mail_path, MAX_HEADER_TEXT, "sentMailPath", "sentMailPath")
    if spec.raw is not None:
        _check_raw(settings, spec)
        return
    recipients = len(spec.to) + len(spec.cc) + len(spec.bcc)
    if recipients == 0:
        raise BadInput("a message needs at least one recipient in to, cc or bcc", field="to")
    if recipients > settings.max_recipients:
        raise BadInput(f"at most {settings.max_recipients} recipients (to, cc, bcc) per message", field="to")
    if len(spec.reply_to) > MAX_REPLY_TO:
        raise BadInput(f"at most {MAX_REPLY_TO} replyTo addresses", field="replyTo")
    if len(spec.attachments) > settings.max_attachments:
        raise BadInput(f"at most {settings.max_attachments} attachments per message", field="attachments")
    for field, addresses in (
        ("from", [spec.from_] if spec.from_ else []),
        ("to", spec.to),
        ("cc", spec.cc),
        ("bcc", spec.bcc),
        ("replyTo", spec.reply_to),
    ):
        _check_addresses(addresses, field)
    _at_most(spec.subject, MAX_SUBJECT, "subject", "subject")
    _at_most(spec.message_id, MAX_HEADER_TEXT, "messageId", "messageId")
    _at_most(spec.preview_text, MAX_PREVIEW_TEXT, "previewText", "previewText")
    for index, attachment in enumerate(spec.attachments):
        where = f"attachments[{index}]"
        _at_most(attachment.filename, MAX_HEADER_TEXT, "attachments", f"{where}.filename")
        _at_most(attachment.content_type, MAX_HEADER_TEXT, "attachments", f"{where}.contentType")
        _at_most(attachment.cid, MAX_HEADER_TEXT, "attachments", f"{where}.cid")
    _check_headers(settings, spec.headers)
    limit = settings.max_message_bytes
    for field, body in (("text", spec.text), ("html", spec.html)):
        if body is not None and len(body) > limit:  # every character is at least one byte
            raise PayloadTooLarge(f"{field} exceeds the message limit of {limit} bytes", field=field)
    if sum(len(a.content) for a in spec.attachments) * 3 // 4 > limit:  # base64: 4 characters, 3 bytes
        raise PayloadTooLarge(f"attachments exceed the message limit of {limit} bytes", field="attachments")


def compose_cost(spec: SubmitSpec) -> int:
    """About how long composing `spec` takes, in units of one body byte (see INLINE_COMPOSE_COST)."""
    headers = spec.headers if isinstance(spec.headers, Mapping) else {}
    return (
        len(spec.raw or "")
        + len(spec.text or "")
        + len(spec.html or "")
        + sum(len(a.content) for a in spec.attachments)
        + _HEADER_CHAR_COST * len(spec.subject or "")
        + sum(_HEADER_COST + _HEADER_CHAR_COST * len(str(value)) for value in headers.values())
        + _ADDRESS_COST * (len(spec.to) + len(spec.cc) + len(spec.bcc) + len(spec.reply_to))
    )


def _b64decode(text: str, field: str) -> bytes:
    """Strict base64 (whitespace allowed), decoded a chunk at a time so the GIL changes hands between.

    The chunks go into one growing buffer, which `getvalue()` hands over without a copy: joining a list
    of them held the decoded bytes twice at once."""
    decoded = BytesIO()
    carry = ""
    try:
        for start in range(0, len(text), _DECODE_CHUNK):
            piece = carry + "".join(text[start : start + _DECODE_CHUNK].split())
            whole = len(piece) - len(piece) % 4
            decoded.write(base64.b64decode(piece[:whole], validate=True))
            carry = piece[whole:]
        if carry:
            base64.b64decode(carry, validate=True)  # raises: a partial quantum
    except (binascii.Error, ValueError) as exc:
        raise BadInput(f"{field} is not valid base64", field=field) from exc
    return decoded.getvalue()


def _attachments(settings: Settings, specs: Sequence[AttachmentSpec]) -> tuple[Attachment, ...]:
    out = []
    total = 0
    for index, spec in enumerate(specs):
        content = _b64decode(spec.content, f"attachments[{index}].content")
        total += len(content)
        if total > settings.max_message_bytes:
            raise PayloadTooLarge(f"message exceeds {settings.max_message_bytes} bytes", field="attachments")
        out.append(
            Attachment(
                content=content,
                filename=spec.filename,
                content_type=spec.content_type,
                cid=spec.cid,
                disposition=spec.disposition,
            )
        )
    return tuple(out)


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    """The extra headers as (name, value) text, in order (their types and sizes were checked by
    check_bounds)."""
    return tuple((str(name), str(raw)) for name, raw in (value or {}).items())


def _from_raw(settings: Settings, spec: SubmitSpec, now: datetime) -> Composed:
    assert spec.raw is not None
    raw = _b64decode(spec.raw, "raw")
    if len(raw) > settings.max_message_bytes:
        raise PayloadTooLarge(
            f"raw exceeds the message limit of {settings.max_message_bytes} bytes", field="raw"
        )
    return prepare_raw(raw, envelope=spec.envelope, message_id=spec.message_id, date=spec.send_at or now)


def _with_envelope(composed: Composed, envelope: Envelope | None) -> Composed:
    """A composed message sent to the given envelope (EmailEngine's `envelope` without `raw`)."""
    if envelope is None:
        return composed
    sender, recipients = settle_envelope(
        envelope, from_=lambda: composed.envelope_from, to=lambda: composed.envelope_to
    )
    return replace(composed, envelope_from=sender, envelope_to=recipients)


def _composed(settings: Settings, sender: Sender, spec: SubmitSpec, now: datetime) -> Composed:
    """Decode and compose; synchronous, so that it can run in a worker thread."""
    try:
        if spec.raw is not None:
            composed = _from_raw(settings, spec, now)
        else:
            composed = _with_envelope(_drafted(settings, sender, spec, now), spec.envelope)
    except ComposeError as exc:
        raise BadInput(str(exc), field=exc.field) from exc
    if len(composed.raw) > settings.max_message_bytes:
        limit = settings.max_message_bytes
        raise PayloadTooLarge(f"the composed message is {len(composed.raw)} bytes, over the limit of {limit}")
    return composed


def _drafted(settings: Settings, sender: Sender, spec: SubmitSpec, now: datetime) -> Composed:
    draft = Draft(
        from_=spec.from_ or Address(address=sender.email, name=sender.name or None),
        to=tuple(spec.to),
        cc=tuple(spec.cc),
        bcc=tuple(spec.bcc),
        reply_to=tuple(spec.reply_to),
        subject=spec.subject,
        text=spec.text,
        html=with_preview_text(spec.html, spec.preview_text)
        if spec.html and spec.preview_text
        else spec.html,
        attachments=_attachments(settings, spec.attachments),
        headers=_headers(spec.headers),
        message_id=spec.message_id,
    )
    return compose(draft, now=now, domain=sender.email.rpartition("@")[2])


async def compose_message(settings: Settings, sender: Sender, spec: SubmitSpec, now: datetime) -> Composed:
    """The message's bytes; BadInput or PayloadTooLarge for input that cannot become one. Call
    `check_bounds` first. Composed in a worker thread when it would hold the event loop for more than a
    few milliseconds (there the interpreter switches threads every few ms, so the loop keeps running)."""
    work = partial(_composed, settings, sender, spec, now)
    if compose_cost(spec) <= INLINE_COMPOSE_COST:
        return work()
    return await asyncio.to_thread(work)
