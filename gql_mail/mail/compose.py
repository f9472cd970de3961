"""Turn a submitted message into the RFC 5322 bytes that are stored and later sent.

Pure and synchronous: no I/O, and the only randomness (the Message-ID) comes from `make_id`, so the same
draft, clock and id always give the same bytes (MIME boundaries are derived from the Message-ID).

The MIME tree, body encodings (quoted-printable/base64 as the library chooses, lines <= 76) and MIME
parameters (RFC 2231 filenames) are built by the standard library's `email` package.  The From, To,
Cc, Reply-To, Subject, Message-ID and extra headers are encoded here, with `email.charset`, and given
to the message pre-folded (`set_raw` under a policy with `refold_source="none"` writes them as they
are), because the library's own folding does not round-trip (CPython 3.11, found by the tests):

* Subject: a space that falls where the folder starts a new encoded-word is written as the folding
  whitespace between two encoded-words, which RFC 2047 6.2 tells readers to delete ("季度会议 📅"
  reads back as "季度会议📅" in CPython and mailparser alike); leading whitespace is left outside the
  first encoded-word, where every reader strips it.  Here unstructured text is either printable
  ASCII folded at its single spaces, or encoded-words of at most 75 characters and nothing else, so
  every character, whitespace included, sits inside an encoded-word.
* Display names: CPython's header parser puts a space between two adjacent encoded-words in a
  phrase (gh-128110), and the folder splits a long non-ASCII name across several, so the name reads
  back as "Ünï cödé".  Since an RFC reader would then drop the space that CPython keeps, no split
  reads the same in both: a non-ASCII display name is ONE encoded-word however long (past RFC 2047's
  75 characters, within the 998-octet line; longer names are refused).

Normalised on the way, because readers disagree otherwise: display names are trimmed and runs of
spaces/tabs become one space (RFC 5322 3.2.2 gives them no other meaning; CPython collapses them even
inside encoded-words, mailparser trims quoted-strings); attachment filenames are trimmed (both
readers strip them); addresses are trimmed, domains lower-cased and IDNs punycoded.  Bodies are
canonical text, as RFC 2046 requires of text/*: line breaks become CRLF and the body ends with one.
Attachment bytes are untouched (base64).
"""

from __future__ import annotations

import binascii
import hashlib
import ipaddress
import mimetypes
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import base64mime, quoprimime
from email.charset import Charset
from email.generator import BytesGenerator
from email.headerregistry import BaseHeader, ContentTypeHeader
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP
from email.utils import format_datetime
from io import BytesIO

from gql_mail.control_chars import control_fault

__all__ = [
    "Address",
    "Attachment",
    "ComposeError",
    "Composed",
    "Draft",
    "compose",
    "new_message_id",
    "normalise_message_id",
    "validate_address",
]


class ComposeError(ValueError):
    """Input that cannot become a valid message; `field` names the input field at fault (e.g. "to",
    "subject", "headers", "attachments", "from", "messageId", "replyTo", "cc", "bcc")."""

    field: str

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Address:
    """A mailbox as submitted; `name` is the display name, if any."""

    address: str
    name: str | None = None


@dataclass(frozen=True)
class Attachment:
    """A file to attach, or with `cid` an inline part the html refers to as "cid:<cid>"."""

    content: bytes  # already base64-decoded by the caller
    filename: str | None = None
    content_type: str | None = None  # guessed from filename (mimetypes) when None, else octet-stream
    cid: str | None = None  # when set: an inline part placed in a multipart/related with the html
    # Content-Disposition: "inline" or "attachment"; None: inline for a part with a cid, else attachment.
    disposition: str | None = None


@dataclass(frozen=True)
class Draft:
    """A message as submitted, before any checking."""

    from_: Address
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # extra headers, in order
    message_id: str | None = None  # with or without <>; generated when None


@dataclass(frozen=True)
class Composed:
    """What is stored and later sent: the bytes, and the SMTP envelope that goes with them."""

    raw: bytes  # the full message, CRLF line endings, no Bcc header
    message_id: str  # with angle brackets, e.g. "<uuid@example.com>"
    envelope_from: str  # bare address
    envelope_to: tuple[str, ...]  # to+cc+bcc bare addresses, de-duplicated case-insensitively, order kept
    subject: str | None = None  # as a reader shows it (decoded)


# CRLF, 7-bit bodies (quoted-printable/base64: no 8BITMIME needed), 7-bit headers (utf8=False), and
# headers we stored pre-folded with set_raw are written as they are.
_POLICY = SMTP.clone(cte_type="7bit", utf8=False, refold_source="none")

_UTF8 = Charset("utf-8")
# Attachment bytes per base64 line, as email.contentmanager's _encode_base64 computes it (76 characters).
_BASE64_LINE_BYTES = (_POLICY.max_line_length or 78) // 4 * 3
_FOLD_AT = 78  # RFC 5322 2.1.1: SHOULD
_MAX_LINE = 998  # RFC 5322 2.1.1: MUST
_EW_MAX = 75  # RFC 2047 2: longest encoded-word
_EW_OVERHEAD = len("=?utf-8?q??=")
_MAX_NAME_EW = 900  # one encoded-word per display name must still fit on a line with its header name

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_DOT_ATOM = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_PLAIN_PHRASE = re.compile(rf"[{_ATEXT}]+(?: [{_ATEXT}]+)*")
_PLAIN_TEXT = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 ftext
_WSP_RUN = re.compile(r"[ \t]+")
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MSG_ID = re.compile(  # RFC 5322 3.6.4 msg-id without the brackets (no obsolete forms)
    rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@(?:[{_ATEXT}]+(?:\.[{_ATEXT}]+)*|\[[\x21-\x5a\x5e-\x7e]*\])"
)
_CID = re.compile(rf"[{_ATEXT}.@]+")
_MAX_ID = 250
_SCAN_CHUNK = 1 << 18  # characters of a body per regex/encode call (see _chunks)
_MAX_PARAMETER = 255
_DISPOSITIONS = frozenset({"inline", "attachment"})

# Reserved for the fields of Draft (and MIME's own headers): an extra header may not duplicate them.
_RESERVED_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id", "mime-version"}
)

# The built-in table only: the system's /etc/mime.types would make the output depend on the host.
_MIME_TYPES = mimetypes.MimeTypes()


def validate_address(value: str, field: str) -> str:
    """Check an email address and return it normalised (trimmed; domain lower-case, IDN as punycode).

    Deliberately narrower than RFC 5321: a dot-atom ASCII local part (quoted local parts and
    SMTPUTF8 addresses are refused), a domain of LDH labels with a dot, or an address literal.
    """
    _check_header_text(value, field, "address")
    address = value.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ComposeError(f"{value!r} is not an email address", field)
    if not _DOT_ATOM.fullmatch(local):
        raise ComposeError(f"{value!r} is not an email address (invalid local part)", field)
    if len(local) > 64:
        raise ComposeError(f"{value!r} is not an email address (local part over 64 characters)", field)
    normalised = f"{local}@{_normalise_domain(domain, value, field)}"
    if len(normalised) > 254:
        raise ComposeError(f"{value!r} is not an email address (over 254 characters)", field)
    return normalised


def compose(
    draft: Draft,
    *,
    now: datetime,
    domain: str | None = None,
    make_id: Callable[[], str] | None = None,
) -> Composed:
    """Build the message for `draft`; raise ComposeError for input that cannot become a valid one.

    Message-ID is `<{make_id() or uuid4}@{domain or the From domain}>` unless the draft brings one.
    The Date header is `now` (a naive datetime is written with the "-0000" unknown-zone offset).
    """
    envelope_from = validate_address(draft.from_.address, "from")
    lists = {
        "to": _validate_addresses(draft.to, "to"),
        "cc": _validate_addresses(draft.cc, "cc"),
        "bcc": _validate_addresses(draft.bcc, "bcc"),
        "replyTo": _validate_addresses(draft.reply_to, "replyTo"),
    }
    if not (lists["to"] or lists["cc"] or lists["bcc"]):
        raise ComposeError("the message has no recipients (to, cc and bcc are all empty)", "to")
    message_id = _message_id(draft, envelope_from, domain, make_id)

    headers = [("From", _address_header("From", [(envelope_from, _name(draft.from_, "from"))], "from"))]
    for header, key in (("To", "to"), ("Cc", "cc"), ("Reply-To", "replyTo")):
        if lists[key]:
            headers.append((header, _address_header(header, lists[key], key)))
    if draft.subject is not None:
        _check_header_text(draft.subject, "subject", "subject")
        headers.append(("Subject", _unstructured("Subject", draft.subject, "subject")))
    headers += [("Date", format_datetime(now)), ("Message-ID", message_id)]
    headers += _extra_headers(draft.headers)
    headers.append(("MIME-Version", "1.0"))
    tree = _body_tree(draft)
    # A message that is one attachment is itself the part whose base64 _Generator writes from its bytes.
    msg = (_BinaryMessage if isinstance(tree, _Part) else EmailMessage)(policy=_POLICY)
    for name, value in headers:
        msg.set_raw(name, value)
    _fill(msg, tree, _boundaries(message_id, draft))

    recipients = [address for key in ("to", "cc", "bcc") for address, _ in lists[key]]
    return Composed(
        raw=_as_bytes(msg),
        message_id=message_id,
        envelope_from=envelope_from,
        envelope_to=tuple(_unique(recipients)),
        subject=draft.subject,
    )


class _Generator(BytesGenerator):
    """The library's generator, with each body written once and never copied whole.

    The library's own costs a big attachment many times its size, all at once: `set_content` keeps the
    base64 text as one str made by joining a str per 76-character line; writing it splits it into a list
    of lines again (and encodes the whole str once more to look for surrogates); and every MIME level is
    generated into a buffer of its own that is then copied into its parent's (the headers can only be
    written after the body, in case it changes the boundary). Here:

    * an attachment (`_BinaryPart`) keeps its bytes, and its base64 is written straight from them, a slice
      at a time, as the lines the library writes (76 characters, CRLF);
    * a level's buffer is a list of the chunks written to it (`_Chunks`): passing it to its parent moves
      the references, not the bytes, and only the outermost sink (`_as_bytes`) holds them as one buffer;
    * other bodies go a slice at a time: the library splits a whole body into lines with one regex call,
      which holds the GIL throughout (0.4 s for a 24 MB attachment on a slow machine), so composed in a
      worker thread it would still stall the event loop. Slices end just after a LF, so no CRLF is split.

    The bytes are the library's, to the octet (tests/mail/test_compose.py compares them). This leans on
    the generator's internals (`_new_buffer`, `_handle_text`, `_write_lines`, the `_fp` it writes to),
    which have been stable from 3.3 to 3.13.
    """

    def _new_buffer(self) -> _Chunks:
        return _Chunks()

    def _handle_text(self, msg: EmailMessage) -> None:
        if isinstance(msg, _BinaryPart):
            self._write_base64(msg.data)
        else:
            super()._handle_text(msg)  # type: ignore[misc]

    # The library binds its default body handler to its own `_handle_text` when its class is built.
    _writeBody = _handle_text

    def _write_base64(self, data: bytes) -> None:
        """What `set_content(data)` then flattening writes: `binascii.b2a_base64` of each 57-byte piece
        (76 characters), each line ended by the policy's line separator."""
        per_line, line = _BASE64_LINE_BYTES, _BASE64_LINE_BYTES // 3 * 4
        nl: bytes = self._encoded_NL  # type: ignore[attr-defined]
        step = per_line * (_SCAN_CHUNK // line)
        view = memoryview(data)
        for start in range(0, len(view), step):
            encoded = binascii.b2a_base64(view[start : start + step], newline=False)
            lines = [encoded[i : i + line] for i in range(0, len(encoded), line)]
            lines.append(b"")
            self._fp.write(nl.join(lines))  # type: ignore[attr-defined]

    def _write_lines(self, lines: str) -> None:
        start = 0
        while len(lines) - start > _SCAN_CHUNK:
            end = lines.find("\n", start + _SCAN_CHUNK) + 1
            if end == 0:
                break
            super()._write_lines(lines[start:end])  # type: ignore[misc]
            start = end
        super()._write_lines(lines[start:] if start else lines)  # type: ignore[misc]


class _Chunks:
    """A MIME level's output as the list of what was written to it; written into another `_Chunks`, it
    hands over its chunks (see `_Generator`)."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()

    def write(self, data: bytes | _Chunks) -> None:
        if isinstance(data, _Chunks):
            self.chunks.extend(data.chunks)
            data.chunks.clear()
        else:
            self.chunks.append(data)

    def getvalue(self) -> _Chunks:
        return self


class _Sink:
    """The outermost output: one growing buffer; chunks handed to it are dropped as they are copied in,
    so the message exists once (plus one chunk) while it is assembled."""

    def __init__(self) -> None:
        self.buffer = BytesIO()

    def write(self, data: bytes | _Chunks) -> None:
        if isinstance(data, _Chunks):
            chunks = data.chunks
            while chunks:
                self.buffer.write(chunks.popleft())
        else:
            self.buffer.write(data)


class _BinaryPart(MIMEPart):
    """An attachment part whose base64 body `_Generator` writes from `data` (the library would keep it as
    one str of the whole base64 text, 1.37 times the attachment, made from a str per line)."""

    data: bytes


class _BinaryMessage(EmailMessage, _BinaryPart):
    """A message whose whole body is one attachment."""


def _as_bytes(msg: EmailMessage) -> bytes:
    """`msg.as_bytes()`, with `_Generator`. BytesIO.getvalue() hands over its buffer without a copy."""
    sink = _Sink()
    _Generator(sink, mangle_from_=False, policy=_POLICY).flatten(msg, unixfrom=False)
    return sink.buffer.getvalue()


# --- addresses ---------------------------------------------------------------------------------------


def _normalise_domain(domain: str, value: str, field: str) -> str:
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        try:
            if literal[:5].lower() == "ipv6:":
                return f"[IPv6:{ipaddress.IPv6Address(literal[5:]).compressed}]"
            return f"[{ipaddress.IPv4Address(literal)}]"
        except ValueError:
            raise ComposeError(f"{value!r} is not an email address (bad address literal)", field) from None
    if domain.isascii():
        ascii_domain = domain.lower()
    else:
        try:
            # The stdlib codec is IDNA 2003 (nameprep lower-cases and maps); the only one we have.
            ascii_domain = domain.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise ComposeError(f"{value!r} is not an email address (bad domain)", field) from None
    labels = ascii_domain.split(".")
    if (
        len(labels) < 2
        or len(ascii_domain) > 253
        or labels[-1].isdigit()
        or not all(_LABEL.fullmatch(label) for label in labels)
    ):
        raise ComposeError(f"{value!r} is not an email address (bad domain)", field)
    return ascii_domain


def _validate_addresses(addresses: Sequence[Address], field: str) -> list[tuple[str, str | None]]:
    return [(validate_address(a.address, field), _name(a, field)) for a in addresses]


def _name(address: Address, field: str) -> str | None:
    """The display name, trimmed and with runs of spaces/tabs made one space, or None if empty.

    RFC 5322 3.2.2 makes whitespace runs in a phrase mean one space, and readers act on it
    differently: CPython collapses them inside encoded-words too, mailparser trims quoted-strings.
    Normalising here is the only way every reader shows the same name.
    """
    if address.name is None:
        return None
    _check_header_text(address.name, field, "display name")
    return _WSP_RUN.sub(" ", address.name.strip()) or None


def _phrase(name: str, field: str) -> str:
    """The display name as it appears in the header: atoms, a quoted-string, or ONE encoded-word."""
    if _PLAIN_PHRASE.fullmatch(name) and "=?" not in name:
        return name
    # CPython's parser decodes encoded-words even inside quoted-strings, so "=?" text is encoded too.
    if _PRINTABLE.fullmatch(name) and "=?" not in name:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    word = _UTF8.header_encode(name)
    if len(word) > _MAX_NAME_EW:
        raise ComposeError(f"display name {name[:40]!r}… is too long", field)
    return word


def _address_header(header: str, mailboxes: Sequence[tuple[str, str | None]], field: str) -> str:
    groups = []
    for index, (address, name) in enumerate(mailboxes):
        mailbox = _phrase(name, field).split(" ") + [f"<{address}>"] if name else [address]
        if index < len(mailboxes) - 1:
            mailbox[-1] += ","
        groups.append(mailbox)
    return _fold(header, groups, field)


def _unique(addresses: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    unique = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            unique.append(address)
    return unique


# --- header text ---------------------------------------------------------------------------------------


def _check_header_text(value: str, field: str, what: str) -> None:
    """Refuse what would let input escape its header (CR/LF) or that no header can carry: the one rule of
    control_chars.py, which the services' fields follow too."""
    if (fault := control_fault(value)) is not None:
        raise ComposeError(f"the {what} must not contain {fault}", field)


def _check_unicode(value: str, field: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ComposeError(f"the {what} is not valid Unicode (lone surrogate)", field) from None


def _unstructured(header: str, value: str, field: str) -> str:
    """Fold `value` as plain ASCII when it reads back the same, else as encoded-words."""
    if not value:
        return ""
    if _PLAIN_TEXT.fullmatch(value) and "=?" not in value:
        try:
            return _fold(header, [[word] for word in value.split(" ")], field)
        except ComposeError:
            pass  # a word too long for one line: encoded-words can split it
    first = max(_FOLD_AT - len(header) - 2, _EW_OVERHEAD + 12)
    return _fold(header, [[word] for word in _encoded_words(value, first)], field)


def _encoded_words(value: str, first_budget: int) -> list[str]:
    """Split `value` into encoded-words of at most `first_budget`, then 75, characters.

    Splits fall between characters (never inside a UTF-8 sequence) and each chunk takes the shorter
    of Q and B, exactly as `Charset.header_encode` will choose.
    """
    words = []
    budget = first_budget
    start = 0
    q_len = b_bytes = 0
    for index, char in enumerate(value):
        octets = char.encode("utf-8")
        q = q_len + quoprimime.header_length(octets)
        b = b_bytes + len(octets)
        if index > start and _EW_OVERHEAD + min(q, base64mime.header_length(bytes(b))) > budget:
            words.append(_UTF8.header_encode(value[start:index]))
            start, budget = index, _EW_MAX
            q, b = quoprimime.header_length(octets), len(octets)
        q_len, b_bytes = q, b
    words.append(_UTF8.header_encode(value[start:]))
    return words


def _fold(header: str, groups: Sequence[Sequence[str]], field: str) -> str:
    """Join words with single spaces, turning a space into CRLF+space where a line would pass 78.

    Every space between our words is a legal folding point (between tokens, or inside a quoted
    string) and unfolding gives back the exact text.  A group (one mailbox) moves to a new line whole
    when that lets it fit; a line is never left holding only whitespace.
    """
    lines: list[str] = []
    width = len(header) + 2
    for group in groups:
        group_width = len(" ".join(group))
        for index, word in enumerate(group):
            if not lines:
                lines.append(word)
                width += len(word)
            else:
                fits = width + 1 + (group_width if index == 0 else len(word)) <= _FOLD_AT
                if index == 0 and not fits and 1 + group_width > _FOLD_AT:
                    # Too wide for any line: fold it word by word from where it starts.
                    fits = width + 1 + len(word) <= _FOLD_AT
                if not fits and lines[-1].strip():
                    lines.append(" " + word)
                    width = 1 + len(word)
                else:
                    lines[-1] += " " + word
                    width += 1 + len(word)
            if width > _MAX_LINE:
                break
        if width > _MAX_LINE:
            raise ComposeError(
                f"the {header[:40]} header has a word too long for a {_MAX_LINE}-octet line", field
            )
    return "\r\n".join(lines)


def _extra_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    folded = []
    for name, value in headers:
        _check_header_text(name, "headers", "header name")
        if not _FIELD_NAME.fullmatch(name):
            raise ComposeError(f"{name[:40]!r} is not a valid header name", "headers")
        if name.lower() in _RESERVED_HEADERS or name.lower().startswith("content-"):
            raise ComposeError(f"the {name} header comes from the message fields, not headers", "headers")
        _check_header_text(value, "headers", f"{name} header")
        folded.append((name, _unstructured(name, value, "headers")))
    return folded


def _message_id(
    draft: Draft, envelope_from: str, domain: str | None, make_id: Callable[[], str] | None
) -> str:
    if draft.message_id is not None:
        return normalise_message_id(draft.message_id, "messageId")
    return new_message_id(domain if domain is not None else envelope_from.rpartition("@")[2], make_id)


def normalise_message_id(value: str, field: str) -> str:
    """A given message id, with or without <>, checked and written as "<left@right>"."""
    _check_header_text(value, field, "message id")
    bare = value.strip()
    if bare.startswith("<") and bare.endswith(">"):
        bare = bare[1:-1]
    if not _MSG_ID.fullmatch(bare) or len(bare) > _MAX_ID:
        raise ComposeError(f"{value[:80]!r} is not a valid message id (left@right)", field)
    return f"<{bare}>"


def new_message_id(domain: str, make_id: Callable[[], str] | None = None) -> str:
    """`<{make_id() or uuid4}@{domain}>`."""
    left = make_id() if make_id is not None else str(uuid.uuid4())
    right = domain
    if not right.isascii():
        right = right.encode("idna").decode("ascii")
    generated = f"{left}@{right}"
    if not _MSG_ID.fullmatch(generated) or len(generated) > _MAX_ID:
        # Not the caller's input: a misconfigured domain or id factory.
        raise ValueError(f"generated message id {generated!r} is not valid")
    return f"<{generated}>"


# --- body ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Text:
    content: str
    subtype: str  # "plain" or "html"


@dataclass(frozen=True)
class _Part:
    """An attachment, checked and with its type settled."""

    content: bytes
    maintype: str
    subtype: str
    params: dict[str, str]
    filename: str | None
    cid: str | None
    disposition: str


@dataclass(frozen=True)
class _Multipart:
    subtype: str  # "mixed", "alternative" or "related"
    children: tuple[_Text | _Part | _Multipart, ...]


def _body_tree(draft: Draft) -> _Text | _Part | _Multipart:
    """The MIME tree, every input checked before any of it is built:

    mixed( alternative( text, related( html, inline... ) ), attachment... )

    where a level with a single child is that child.  Inline parts with no html to reference them
    travel in the mixed level, keeping their Content-ID.
    """
    parts = [_prepare_attachment(attachment, index) for index, attachment in enumerate(draft.attachments)]
    cids = [part.cid for part in parts if part.cid is not None]
    if len(set(cids)) != len(cids):
        duplicate = next(cid for cid in cids if cids.count(cid) > 1)
        raise ComposeError(f"the cid {duplicate!r} is used by two attachments", "attachments")
    inline = tuple(part for part in parts if part.cid is not None and draft.html is not None)
    regular = tuple(part for part in parts if part not in inline)

    core: list[_Text | _Part | _Multipart] = []
    if draft.text is not None:
        core.append(_Text(_body_text(draft.text, "text"), "plain"))
    if draft.html is not None:
        html = _Text(_body_text(draft.html, "html"), "html")
        core.append(_Multipart("related", (html, *inline)) if inline else html)
    content: list[_Text | _Part | _Multipart] = (
        [_Multipart("alternative", tuple(core))] if len(core) == 2 else core
    )
    content.extend(regular)
    if not content:
        return _Text("", "plain")
    return content[0] if len(content) == 1 else _Multipart("mixed", tuple(content))


def _fill(part: MIMEPart, node: _Text | _Part | _Multipart, boundaries: Iterator[str]) -> None:
    """Build `node` into `part` with the library's content manager."""
    if isinstance(node, _Text):
        # The library sends short ASCII lines as 7bit, as they are; control characters must not be.
        controls = any(_BODY_CONTROL.search(chunk) for chunk in _chunks(node.content))
        cte = "quoted-printable" if controls else None
        part.set_content(node.content, subtype=node.subtype, charset="utf-8", cte=cte)
    elif isinstance(node, _Multipart):
        make = {"mixed": part.make_mixed, "alternative": part.make_alternative, "related": part.make_related}
        make[node.subtype](boundary=next(boundaries))
        for child in node.children:
            sub = _BinaryPart(policy=_POLICY) if isinstance(child, _Part) else MIMEPart(policy=_POLICY)
            _fill(sub, child, boundaries)
            part.attach(sub)
    else:
        params = dict(node.params)
        if node.filename is not None:
            params.setdefault("name", node.filename)  # for readers that look only at Content-Type
        # The headers as set_content writes them for these bytes (none depends on the bytes); the body is
        # written from them by _Generator when the part is a _BinaryPart.
        part.set_content(
            b"" if isinstance(part, _BinaryPart) else node.content,
            node.maintype,
            node.subtype,
            disposition=node.disposition,
            filename=node.filename,
            params=params,
        )
        if isinstance(part, _BinaryPart):
            part.data = node.content
        if node.cid is not None:
            # Stored raw: the library would fold a long Content-ID into an encoded-word.
            part.set_raw("Content-ID", f"<{node.cid}>")


def _boundaries(message_id: str, draft: Draft) -> Iterator[str]:
    """Deterministic MIME boundaries, distinct and of equal length (so none is a prefix of another).

    "=_" never occurs in quoted-printable or base64 text; a body the library keeps as 7bit is
    searched, so no boundary can occur inside a part.
    """
    verbatim = [text for text in (draft.text, draft.html) if text]
    counter = 0
    while True:
        boundary = "=_" + hashlib.sha256(f"{message_id}/{counter}".encode()).hexdigest()[:32]
        counter += 1
        if not any(boundary in text for text in verbatim):
            yield boundary


def _chunks(value: str) -> Iterator[str]:
    """A body in slices for scanning: each regex or encode call holds the GIL for its whole length, and a
    message may be composed in a worker thread while the event loop waits for the GIL."""
    for start in range(0, len(value), _SCAN_CHUNK):
        yield value[start : start + _SCAN_CHUNK]


def _body_text(value: str, field: str) -> str:
    for chunk in _chunks(value):
        _check_unicode(chunk, field, field)
    return value


def _prepare_attachment(attachment: Attachment, index: int) -> _Part:
    where = f"attachments[{index}]"
    filename = _filename(attachment.filename, where)
    maintype, subtype, params = _content_type(attachment.content_type, filename, where)
    cid = _cid(attachment.cid, where)
    disposition = attachment.disposition or ("inline" if cid is not None else "attachment")
    if disposition not in _DISPOSITIONS:
        raise ComposeError(f"{where}: contentDisposition must be inline or attachment", "attachments")
    return _Part(attachment.content, maintype, subtype, params, filename, cid, disposition)


def _filename(filename: str | None, where: str) -> str | None:
    if filename is None:
        return None
    _check_header_text(filename, "attachments", f"{where} filename")
    if len(filename) > _MAX_PARAMETER:
        # Filesystems stop at 255; the library's RFC 2231 folding is quadratic in the length.
        raise ComposeError(f"{where}: the filename is over {_MAX_PARAMETER} characters", "attachments")
    # Readers (CPython's get_filename, mailparser) strip surrounding whitespace: store what they read.
    return filename.strip() or None


def _cid(cid: str | None, where: str) -> str | None:
    if cid is None:
        return None
    _check_header_text(cid, "attachments", f"{where} cid")
    bare = cid.strip()
    if bare.startswith("<") and bare.endswith(">"):
        bare = bare[1:-1]
    if not _CID.fullmatch(bare) or len(bare) > _MAX_ID:
        raise ComposeError(f"{where}: {cid!r} is not a valid cid", "attachments")
    return bare


def _content_type(
    content_type: str | None, filename: str | None, where: str
) -> tuple[str, str, dict[str, str]]:
    if content_type is None:
        guessed, encoding = _MIME_TYPES.guess_type(filename or "", strict=False)
        # "x.tar.gz" guesses application/x-tar + gzip: the tar type describes what is inside.
        if guessed is None or encoding is not None or guessed.startswith(("multipart/", "message/")):
            guessed = "application/octet-stream"
        maintype, _, subtype = guessed.partition("/")
        return maintype, subtype, {}
    _check_header_text(content_type, "attachments", f"{where} content type")
    if len(content_type) > _MAX_PARAMETER:
        raise ComposeError(f"{where}: the content type is over {_MAX_PARAMETER} characters", "attachments")
    header = _POLICY.header_factory("content-type", content_type)
    valid = isinstance(header, ContentTypeHeader) and isinstance(header, BaseHeader) and not header.defects
    if not valid or "/" not in content_type:
        raise ComposeError(f"{where}: {content_type!r} is not a valid content type", "attachments")
    if header.maintype in ("multipart", "message"):
        # RFC 2046 allows only 7bit/8bit/binary for these; an attachment is always base64.
        raise ComposeError(
            f"{where}: a {header.maintype}/* attachment cannot be base64-encoded; "
            "send it as application/octet-stream",
            "attachments",
        )
    return header.maintype, header.subtype, dict(header.params)
