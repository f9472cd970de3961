"""Turn a submitted message into the RFC 5322 bytes that are stored and later sent.

Pure and synchronous: no I/O, and the only randomness (the Message-ID) comes from `make_id`, so the same
draft, clock and id always give the same bytes (MIME boundaries are derived from the Message-ID).

The MIME tree, body encodings (quoted-printable/base64 chosen by the library, lines <= 76) and MIME
parameters (RFC 2231 filenames) are built by the standard library's `email` package.  The address
headers, Subject, Message-ID and extra headers are encoded here and handed to the message pre-folded,
because the library's own folder cannot be trusted with them:

* The header parser in CPython <= 3.13 (gh-128110) joins two adjacent encoded-words inside a display
  name with a space, where RFC 2047 6.2 says the whitespace between them is dropped.  The library's
  folder splits a long non-ASCII name into several encoded-words, so the name comes back with spaces
  in the middle of words, e.g. "Ünï cödé".  No split can satisfy both readings, so a display name is
  always ONE encoded-word, however long (the one place we exceed RFC 2047's 75-character advice; we
  keep it within the hard 998-octet line limit and refuse longer names).
* The library re-parses and re-folds structured headers with every flatten, which is where its
  RFC 2047 whitespace bugs live; a value we fold ourselves, stored with `set_raw` under a policy
  with `refold_source="none"`, is written exactly as given.
* Unstructured text (Subject, extra headers) is either plain printable ASCII folded at its spaces, or
  entirely encoded-words of at most 75 characters: whitespace between encoded-words in unstructured
  text is dropped by every parser, so every character, including leading, trailing and repeated
  spaces, sits inside an encoded-word and survives.

Bodies are canonical text: line breaks become CRLF and the body ends with one, as RFC 2046 requires
of text/* (so "a\\nb" reads back as "a\\r\\nb\\r\\n").  Attachment bytes are untouched (base64).
"""

from __future__ import annotations

import hashlib
import ipaddress
import mimetypes
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import base64mime, quoprimime
from email.charset import Charset
from email.headerregistry import ContentTypeHeader, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP
from email.utils import format_datetime

__all__ = [
    "Address",
    "Attachment",
    "ComposeError",
    "Composed",
    "Draft",
    "compose",
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
    address: str
    name: str | None = None


@dataclass(frozen=True)
class Attachment:
    content: bytes  # already base64-decoded by the caller
    filename: str | None = None
    content_type: str | None = None  # guessed from filename (mimetypes) when None, else octet-stream
    cid: str | None = None  # when set: an inline part placed in a multipart/related with the html


@dataclass(frozen=True)
class Draft:
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
    raw: bytes  # the full message, CRLF line endings, no Bcc header
    message_id: str  # with angle brackets, e.g. "<uuid@example.com>"
    envelope_from: str  # bare address
    envelope_to: tuple[str, ...]  # to+cc+bcc bare addresses, de-duplicated case-insensitively, order kept


# CRLF, 7-bit bodies (quoted-printable/base64: no 8BITMIME needed), 7-bit headers (utf8=False), and
# headers we stored pre-folded with set_raw are written as they are.
POLICY = SMTP.clone(cte_type="7bit", utf8=False, refold_source="none")

_UTF8 = Charset("utf-8")
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
_LINE_BREAK = re.compile(r"[\r\n]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # C0 controls but TAB (CR/LF reported separately)
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MSG_ID = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@(?:[{_ATEXT}]+(?:\.[{_ATEXT}]+)*|\[[\x21-\x5a\x5e-\x7e]*\])")
_CID = re.compile(rf"[{_ATEXT}.@]+")
_MAX_ID = 250

# Reserved for the fields of Draft (and MIME's own headers): an extra header may not duplicate them.
_RESERVED_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id", "mime-version"}
)

# The built-in table only: the system's /etc/mime.types would make the output depend on the host.
_MIME_TYPES = mimetypes.MimeTypes()
_HEADER_REGISTRY = HeaderRegistry()


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

    msg = EmailMessage(policy=POLICY)
    msg.set_raw("From", _address_header("From", [(envelope_from, _name(draft.from_, "from"))], "from"))
    for header, key in (("To", "to"), ("Cc", "cc"), ("Reply-To", "replyTo")):
        if lists[key]:
            msg.set_raw(header, _address_header(header, lists[key], key))
    if draft.subject is not None:
        _check_header_text(draft.subject, "subject", "subject")
        msg.set_raw("Subject", _unstructured("Subject", draft.subject, "subject"))
    msg.set_raw("Date", format_datetime(now))
    msg.set_raw("Message-ID", message_id)
    for name, value in _extra_headers(draft.headers):
        msg.set_raw(name, value)
    msg.set_raw("MIME-Version", "1.0")
    _build_body(msg, draft, _boundaries(message_id, draft))

    recipients = [address for key in ("to", "cc", "bcc") for address, _ in lists[key]]
    return Composed(
        raw=msg.as_bytes(),
        message_id=message_id,
        envelope_from=envelope_from,
        envelope_to=tuple(_unique(recipients)),
    )


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
    """Refuse what would let input escape its header (CR/LF) or that no header can carry."""
    if _LINE_BREAK.search(value):
        raise ComposeError(f"the {what} must not contain a line break (CR or LF)", field)
    if _CONTROL.search(value):
        raise ComposeError(f"the {what} must not contain control characters", field)
    _check_unicode(value, field, what)


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
    lines = [""]
    width = len(header) + 2
    started = False
    for group in groups:
        group_width = len(" ".join(group))
        for index, word in enumerate(group):
            if not started:
                lines[-1], width, started = word, width + len(word), True
                continue
            if index == 0:
                fold = width + 1 + group_width > _FOLD_AT and (
                    1 + group_width <= _FOLD_AT or width + 1 + len(word) > _FOLD_AT
                )
            else:
                fold = width + 1 + len(word) > _FOLD_AT
            if fold and lines[-1].strip():
                lines.append(" " + word)
                width = 1 + len(word)
            else:
                lines[-1] += " " + word
                width += 1 + len(word)
            if width > _MAX_LINE:
                raise ComposeError(
                    f"the {header} header has a word too long for a {_MAX_LINE}-octet line", field
                )
    return "\r\n".join(lines)


def _extra_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    folded = []
    for name, value in headers:
        _check_header_text(name, "headers", "header name")
        if not _FIELD_NAME.fullmatch(name):
            raise ComposeError(f"{name!r} is not a valid header name", "headers")
        if name.lower() in _RESERVED_HEADERS or name.lower().startswith("content-"):
            raise ComposeError(f"the {name} header is set from the message fields and cannot be given", "headers")
        _check_header_text(value, "headers", f"{name} header")
        folded.append((name, _unstructured(name, value, "headers")))
    return folded


def _message_id(
    draft: Draft, envelope_from: str, domain: str | None, make_id: Callable[[], str] | None
) -> str:
    if draft.message_id is not None:
        _check_header_text(draft.message_id, "messageId", "message id")
        bare = draft.message_id.strip()
        if bare.startswith("<") and bare.endswith(">"):
            bare = bare[1:-1]
        if not _MSG_ID.fullmatch(bare) or len(bare) > _MAX_ID:
            raise ComposeError(f"{draft.message_id!r} is not a valid message id (left@right)", "messageId")
        return f"<{bare}>"
    left = make_id() if make_id is not None else str(uuid.uuid4())
    right = domain if domain is not None else envelope_from.rpartition("@")[2]
    if not right.isascii():
        right = right.encode("idna").decode("ascii")
    generated = f"{left}@{right}"
    if not _MSG_ID.fullmatch(generated) or len(generated) > _MAX_ID:
        # Not the caller's input: a misconfigured domain or id factory.
        raise ValueError(f"generated message id {generated!r} is not valid")
    return f"<{generated}>"


# --- body ------------------------------------------------------------------------------------------------


def _boundaries(message_id: str, draft: Draft) -> Iterable[str]:
    """Deterministic MIME boundaries, distinct and of equal length (so none is a prefix of another).

    "=_" can never appear in quoted-printable or base64 text, and a body the library keeps as 7bit is
    checked, so a boundary cannot occur inside a part.
    """
    verbatim = [s for s in (draft.text, draft.html) if s]
    counter = 0
    while True:
        digest = hashlib.sha256(f"{message_id}/{counter}".encode()).hexdigest()[:32]
        counter += 1
        boundary = f"=_{digest}"
        if not any(boundary in s for s in verbatim):
            yield boundary


def _build_body(msg: EmailMessage, draft: Draft, boundaries: Iterable[str]) -> None:
    """Fill `msg` with the MIME tree:

    mixed( alternative( text, related( html, inline... ) ), attachment... )

    where every level with a single child collapses into that child.  Inline parts without an html
    body to reference them travel in the mixed level.
    """
    boundary = iter(boundaries)
    inline = [(i, a) for i, a in enumerate(draft.attachments) if a.cid is not None]
    regular = [(i, a) for i, a in enumerate(draft.attachments) if a.cid is None]
    _check_unique_cids(inline)
    if draft.html is None:
        regular = sorted(inline + regular)
        inline = []

    html: _Node | None = None
    if draft.html is not None:
        html = _TextNode(_body_text(draft.html, "html"), "html")
        if inline:
            html = _MultiNode("related", [html, *(_AttachmentNode(a, i) for i, a in inline)])
    text: _Node | None = None
    if draft.text is not None:
        text = _TextNode(_body_text(draft.text, "text"), "plain")
    core = [node for node in (text, html) if node is not None]
    content: list[_Node] = []
    if len(core) == 2:
        content.append(_MultiNode("alternative", core))
    else:
        content += core
    content += [_AttachmentNode(a, i) for i, a in regular]
    if not content:
        content.append(_TextNode("", "plain"))
    root = content[0] if len(content) == 1 else _MultiNode("mixed", content)
    root.fill(msg, boundary)


def _body_text(value: str, field: str) -> str:
    _check_unicode(value, field, field)
    return value


def _check_unique_cids(inline: Sequence[tuple[int, Attachment]]) -> None:
    seen: set[str] = set()
    for index, attachment in inline:
        cid = _cid(attachment, index)
        if cid in seen:
            raise ComposeError(f"attachments[{index}]: cid {cid!r} is used twice", "attachments")
        seen.add(cid)


class _Node:
    def fill(self, part: MIMEPart, boundaries: Iterable[str]) -> None:
        raise NotImplementedError


class _TextNode(_Node):
    def __init__(self, text: str, subtype: str) -> None:
        self.text, self.subtype = text, subtype

    def fill(self, part: MIMEPart, boundaries: Iterable[str]) -> None:
        # The library keeps short ASCII lines as 7bit; control characters must not travel bare.
        cte = "quoted-printable" if _BODY_CONTROL.search(self.text) else None
        part.set_content(self.text, subtype=self.subtype, charset="utf-8", cte=cte)


class _MultiNode(_Node):
    def __init__(self, subtype: str, children: Sequence[_Node]) -> None:
        self.subtype, self.children = subtype, children

    def fill(self, part: MIMEPart, boundaries: Iterable[str]) -> None:
        boundary = next(iter(boundaries))
        make = {"mixed": part.make_mixed, "alternative": part.make_alternative, "related": part.make_related}
        make[self.subtype](boundary=boundary)
        for child in self.children:
            sub = MIMEPart(policy=POLICY)
            child.fill(sub, boundaries)
            part.attach(sub)


class _AttachmentNode(_Node):
    def __init__(self, attachment: Attachment, index: int) -> None:
        self.attachment, self.index = attachment, index

    def fill(self, part: MIMEPart, boundaries: Iterable[str]) -> None:
        attachment, where = self.attachment, f"attachments[{self.index}]"
        filename = _filename(attachment, where)
        maintype, subtype, params = _content_type(attachment, filename, where)
        if filename is not None and "name" not in params:
            params["name"] = filename  # for readers that only look at Content-Type (older Outlook)
        cid = _cid(attachment, self.index)
        part.set_content(
            attachment.content,
            maintype,
            subtype,
            disposition="inline" if cid is not None else "attachment",
            filename=filename,
            params=params,
        )
        if cid is not None:
            # Stored raw: the library folds a long Content-ID as an encoded-word, which breaks it.
            part.set_raw("Content-ID", f"<{cid}>")


def _filename(attachment: Attachment, where: str) -> str | None:
    if attachment.filename is None:
        return None
    _check_header_text(attachment.filename, "attachments", f"{where} filename")
    # Readers (CPython's get_filename among them) strip surrounding whitespace; do it here so what
    # is stored is what is read.
    return attachment.filename.strip() or None


def _cid(attachment: Attachment, index: int) -> str | None:
    if attachment.cid is None:
        return None
    _check_header_text(attachment.cid, "attachments", f"attachments[{index}] cid")
    cid = attachment.cid.strip()
    if cid.startswith("<") and cid.endswith(">"):
        cid = cid[1:-1]
    if not _CID.fullmatch(cid) or len(cid) > _MAX_ID:
        raise ComposeError(f"attachments[{index}]: {attachment.cid!r} is not a valid cid", "attachments")
    return cid


def _content_type(attachment: Attachment, filename: str | None, where: str) -> tuple[str, str, dict[str, str]]:
    if attachment.content_type is None:
        guessed, encoding = _MIME_TYPES.guess_type(filename or "", strict=False)
        # "x.tar.gz" guesses application/x-tar + gzip: the tar type describes what is inside.
        if guessed is None or encoding is not None or guessed.startswith(("multipart/", "message/")):
            guessed = "application/octet-stream"
        maintype, _, subtype = guessed.partition("/")
        return maintype, subtype, {}
    _check_header_text(attachment.content_type, "attachments", f"{where} content type")
    header = _HEADER_REGISTRY("content-type", attachment.content_type)
    assert isinstance(header, ContentTypeHeader)
    if header.defects or "/" not in attachment.content_type:
        raise ComposeError(f"{where}: {attachment.content_type!r} is not a valid content type", "attachments")
    if header.maintype in ("multipart", "message"):
        # RFC 2046 allows only 7bit/8bit/binary for these; an attachment is always base64.
        raise ComposeError(
            f"{where}: a {header.maintype}/* attachment cannot be base64-encoded; "
            "send it as application/octet-stream",
            "attachments",
        )
    return header.maintype, header.subtype, dict(header.params)
