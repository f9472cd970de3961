"""gql_mail.mail.compose: structure, headers, refusals, and round trips through two parsers.

Fidelity is checked by reading the bytes back with CPython's parser (policy.default) and with Node's
mailparser (tests/mail/js/parse.js, skipped unless `npm install --prefix tests/mail/js` has run).
Every message composed here also goes through `_assert_wire_format` (CRLF, <= 998 octets, 7-bit).
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gql_mail.mail.compose import (
    Address,
    Attachment,
    Composed,
    ComposeError,
    Draft,
    compose,
    validate_address,
)

NOW = datetime(2024, 5, 1, 12, 30, 5, tzinfo=UTC)
SENDER = Address("sender@example.com", "Sender")
RCPT = Address("rcpt@example.net", "Rcpt")
JS_DIR = Path(__file__).parent / "js"

NodeParse = Callable[[bytes], dict[str, Any]]

# DESIGN.md "Message fidelity": non-ASCII text longer than a line, mixing scripts, emoji, accents, spaces.
LONG_SUBJECT = (
    "  Réunion trimestrielle — 季度会议 📅🎉 ça commence à 9h, n'oubliez pas 的 résumé 😀 "
    "Ελληνικά και русский текст  двойной  пробел Ärger über Öl Ünïcödé ✓ 你好世界 👍🏽 fin.  "
)
LONG_SUBJECT = (LONG_SUBJECT * 2)[:200]
LONG_NAME = ("Åsa Ñandú-Müller, 王小明 (🦄 Ünïcödé) " * 4)[:119] + "终"
COMMA_NAME = 'Doe, Jöhn "Jo" (Ünïcödé), Jr.'
ASCII_TRICKY_NAME = 'Doe, John "the boss" (CEO) \\ <admin@x> ; : @'


def _draft(**fields: Any) -> Draft:
    fields.setdefault("from_", SENDER)
    fields.setdefault("to", (RCPT,))
    return Draft(**fields)


def _compose(draft: Draft, **kwargs: Any) -> Composed:
    kwargs.setdefault("make_id", lambda: "test-id")
    composed = compose(draft, now=NOW, **kwargs)
    _assert_wire_format(composed.raw)
    return composed


def _assert_wire_format(raw: bytes) -> None:
    assert raw.endswith(b"\r\n")
    assert max(raw) < 0x80, "headers and bodies must be 7-bit"
    lines = raw.split(b"\r\n")
    for line in lines:
        assert b"\r" not in line and b"\n" not in line, f"bare CR or LF in {line[:60]!r}"
        assert len(line) <= 998, f"line of {len(line)} octets: {line[:60]!r}"
    header = raw.split(b"\r\n\r\n", 1)[0]
    assert re.search(rb"^bcc:", header, re.IGNORECASE | re.MULTILINE) is None


def _parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _tree(part: EmailMessage) -> Any:
    """The MIME structure as nested (content-type, [children]) / content-type."""
    if part.is_multipart():
        children = [child for child in part.iter_parts() if isinstance(child, EmailMessage)]
        return (part.get_content_type(), [_tree(child) for child in children])
    return part.get_content_type()


def _canonical(text: str) -> str:
    """What a text body reads back as: CRLF line breaks (here as LF) and a final line break."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def _body(message: EmailMessage, subtype: str) -> str | None:
    for part in message.walk():
        if part.get_content_type() == f"text/{subtype}" and part.get_content_disposition() is None:
            content = part.get_content()
            assert isinstance(content, str)
            return content.replace("\r\n", "\n")
    return None


def _names(message: EmailMessage, header: str) -> list[tuple[str, str]]:
    return [(a.display_name, a.addr_spec) for a in message[header].addresses]


def _attachments(message: EmailMessage) -> list[tuple[str | None, str, str | None, bytes]]:
    found = []
    for part in message.walk():
        disposition = part.get_content_disposition()
        if disposition in ("attachment", "inline"):
            cid = part["Content-ID"]
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            # Not get_filename(): it unquotes a second time and strips, so '"a"' reads back as 'a'.
            filename = part["Content-Disposition"].params.get("filename")
            found.append((filename, part.get_content_type(), cid and str(cid).strip("<>"), payload))
    return found


def _display(name: str) -> str:
    """A display name as every reader shows it: trimmed, space/tab runs as one space."""
    return re.sub(r"[ \t]+", " ", name.strip())


def _header_names(raw: bytes) -> list[str]:
    header = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [line.split(":", 1)[0] for line in header.split("\r\n") if line and not line[0].isspace()]


@pytest.fixture(scope="module")
def node_parse() -> Iterator[NodeParse]:
    """One long-lived `node parse.js --lines` process: node's start-up dominates a single parse."""
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "mailparser").is_dir():
        pytest.skip("needs node and `npm install --prefix tests/mail/js`")
    process = subprocess.Popen(
        [node, str(JS_DIR / "parse.js"), "--lines"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout

    def parse(raw: bytes) -> dict[str, Any]:
        stdin.write(base64.b64encode(raw).decode("ascii") + "\n")
        stdin.flush()
        result: dict[str, Any] = json.loads(stdout.readline())
        assert "error" not in result, result
        return result

    yield parse
    stdin.close()
    process.wait(timeout=10)
    stdout.close()


def _node_addresses(parsed: dict[str, Any], key: str) -> list[tuple[str, str]]:
    return [(a["name"], a["address"]) for a in parsed[key]]


def _unicode_address(address: str) -> str:
    """mailparser shows IDN domains decoded."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.encode('ascii').decode('idna')}"


# --- structure ----------------------------------------------------------------------------------------


def test_text_only_is_a_single_text_plain_part() -> None:
    message = _parse(_compose(_draft(text="Hello\nworld")).raw)
    assert _tree(message) == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert _body(message, "plain") == "Hello\nworld\n"


def test_html_only_is_a_single_text_html_part() -> None:
    message = _parse(_compose(_draft(html="<p>Hello</p>")).raw)
    assert _tree(message) == "text/html"
    assert _body(message, "html") == "<p>Hello</p>\n"


def test_text_and_html_are_alternatives_plain_first() -> None:
    message = _parse(_compose(_draft(text="Hi", html="<b>Hi</b>")).raw)
    assert _tree(message) == ("multipart/alternative", ["text/plain", "text/html"])


def test_inline_parts_sit_in_a_related_part_with_the_html() -> None:
    logo = Attachment(b"\x89PNG\r\n\x1a\n", "logo.png", cid="logo@example.com")
    message = _parse(_compose(_draft(html='<img src="cid:logo@example.com">', attachments=(logo,))).raw)
    assert _tree(message) == ("multipart/related", ["text/html", "image/png"])
    assert _attachments(message) == [("logo.png", "image/png", "logo@example.com", b"\x89PNG\r\n\x1a\n")]
    inline = list(message.walk())[-1]
    assert inline.get_content_disposition() == "inline"


def test_full_tree_mixed_alternative_related() -> None:
    draft = _draft(
        text="plain",
        html='<img src="cid:a">',
        attachments=(
            Attachment(b"pdf", "report.pdf"),
            Attachment(b"gif", "a.gif", cid="a"),
            Attachment(b"zip", "b.zip"),
        ),
    )
    message = _parse(_compose(draft).raw)
    assert _tree(message) == (
        "multipart/mixed",
        [
            ("multipart/alternative", ["text/plain", ("multipart/related", ["text/html", "image/gif"])]),
            "application/pdf",
            "application/zip",
        ],
    )


def test_attachments_wrap_a_single_body_in_mixed() -> None:
    message = _parse(_compose(_draft(text="see attached", attachments=(Attachment(b"x", "x.txt"),))).raw)
    assert _tree(message) == ("multipart/mixed", ["text/plain", "text/plain"])
    assert _attachments(message) == [("x.txt", "text/plain", None, b"x")]


def test_attachments_without_a_body_are_mixed_alone() -> None:
    message = _parse(_compose(_draft(attachments=(Attachment(b"1"), Attachment(b"2")))).raw)
    assert _tree(message) == ("multipart/mixed", ["application/octet-stream", "application/octet-stream"])


def test_inline_parts_without_html_travel_in_mixed_keeping_their_cid() -> None:
    draft = _draft(text="no html", attachments=(Attachment(b"img", "i.png", cid="i1"),))
    message = _parse(_compose(draft).raw)
    assert _tree(message) == ("multipart/mixed", ["text/plain", "image/png"])
    assert _attachments(message) == [("i.png", "image/png", "i1", b"img")]


def test_empty_message_is_an_empty_text_plain() -> None:
    message = _parse(_compose(_draft()).raw)
    assert _tree(message) == "text/plain"
    assert _body(message, "plain") == "\n"


def test_long_lines_are_encoded_within_998_octets() -> None:
    html = "<p>" + "word " * 1000 + "</p>"  # 5,007 characters, one line
    text = "x" * 5000 + "\n" + "é" * 3000
    composed = _compose(_draft(text=text, html=html))
    message = _parse(composed.raw)
    assert _body(message, "html") == html + "\n"
    assert _body(message, "plain") == text + "\n"
    assert max(len(line) for line in composed.raw.split(b"\r\n")) <= 78


def test_bodies_are_canonical_crlf_whatever_the_input_line_endings() -> None:
    composed = _compose(_draft(text="a\nb\r\nc\rd"))
    assert b"a\r\nb\r\nc\r\nd\r\n" in composed.raw
    assert _body(_parse(composed.raw), "plain") == "a\nb\nc\nd\n"


def test_control_characters_in_a_body_are_not_sent_bare() -> None:
    composed = _compose(_draft(text="nul\x00 bell\x07 ok"))
    assert b"\x00" not in composed.raw and b"\x07" not in composed.raw
    assert _body(_parse(composed.raw), "plain") == "nul\x00 bell\x07 ok\n"


def test_attachment_bytes_survive_exactly() -> None:
    blob = bytes(range(256)) * 40 + b"\r\n\n\r--=_ not a boundary\r\n"
    composed = _compose(_draft(text="t", attachments=(Attachment(blob, "blob.bin"),)))
    assert _attachments(_parse(composed.raw)) == [("blob.bin", "application/octet-stream", None, blob)]


def test_content_type_is_guessed_given_or_octet_stream() -> None:
    draft = _draft(
        attachments=(
            Attachment(b"a", "photo.JPG"),
            Attachment(b"b", "archive.tar.gz"),
            Attachment(b"c", "noextension"),
            Attachment(b"d"),
            Attachment(b"e", "invite.ics", content_type="text/calendar; method=REQUEST"),
            Attachment(b"f", "forwarded.eml"),
        )
    )
    message = _parse(_compose(draft).raw)
    types = [content_type for _, content_type, _, _ in _attachments(message)]
    assert types == [
        "image/jpeg",
        "application/octet-stream",
        "application/octet-stream",
        "application/octet-stream",
        "text/calendar",
        "application/octet-stream",
    ]
    calendar = [p for p in message.walk() if p.get_content_type() == "text/calendar"][0]
    assert calendar.get_param("method") == "REQUEST"


@pytest.mark.parametrize("content_type", ["text", "text/", "/plain", "text/plain; =x", "a b/c"])
def test_invalid_content_type_is_refused(content_type: str) -> None:
    with pytest.raises(ComposeError) as error:
        _compose(_draft(attachments=(Attachment(b"x", content_type=content_type),)))
    assert error.value.field == "attachments"


@pytest.mark.parametrize("content_type", ["multipart/mixed", "message/rfc822"])
def test_container_content_types_are_refused(content_type: str) -> None:
    with pytest.raises(ComposeError, match="octet-stream") as error:
        _compose(_draft(attachments=(Attachment(b"x", content_type=content_type),)))
    assert error.value.field == "attachments"


def test_duplicate_cids_are_refused() -> None:
    attachments = (Attachment(b"1", cid="same"), Attachment(b"2", cid="<same>"))
    with pytest.raises(ComposeError, match="two attachments") as error:
        _compose(_draft(html="x", attachments=attachments))
    assert error.value.field == "attachments"


@pytest.mark.parametrize("cid", ["has space", "a<b", "", 'q"uote', "x" * 251])
def test_invalid_cids_are_refused(cid: str) -> None:
    with pytest.raises(ComposeError) as error:
        _compose(_draft(html="x", attachments=(Attachment(b"1", cid=cid),)))
    assert error.value.field == "attachments"


def test_filenames_are_trimmed_as_readers_would() -> None:
    message = _parse(
        _compose(_draft(attachments=(Attachment(b"1", "  a b.txt  "), Attachment(b"2", " ")))).raw
    )
    assert [filename for filename, _, _, _ in _attachments(message)] == ["a b.txt", None]


def test_boundaries_are_deterministic_and_avoid_the_bodies() -> None:
    draft = _draft(text="t", html="h", attachments=(Attachment(b"x"),))
    first, second = _compose(draft), _compose(draft)
    assert first.raw == second.raw
    boundaries = re.findall(rb'boundary="([^"]+)"', first.raw)
    assert len(set(boundaries)) == 2
    # A body holding a would-be boundary (7bit: short ASCII lines are sent as they are) moves it.
    hostile = _draft(text="--" + boundaries[0].decode() + "\n", html="h", attachments=(Attachment(b"x"),))
    composed = _compose(hostile)
    assert boundaries[0] not in re.findall(rb'boundary="([^"]+)"', composed.raw)
    assert _body(_parse(composed.raw), "plain") == "--" + boundaries[0].decode() + "\n"


# --- headers -----------------------------------------------------------------------------------------


def test_headers_in_order_with_date_and_message_id() -> None:
    draft = _draft(
        to=(RCPT,),
        cc=(Address("cc@example.org"),),
        bcc=(Address("hidden@example.org"),),
        reply_to=(Address("replies@example.com", "Replies"),),
        subject="Hello",
        text="body",
        headers=(("X-Campaign", "spring"), ("List-Unsubscribe", "<mailto:u@example.com>")),
    )
    composed = _compose(draft)
    assert _header_names(composed.raw) == [
        "From",
        "To",
        "Cc",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "X-Campaign",
        "List-Unsubscribe",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
    ]
    message = _parse(composed.raw)
    assert message["Date"] == "Wed, 01 May 2024 12:30:05 +0000"
    assert message["Date"].datetime == NOW
    assert message["Message-ID"] == "<test-id@example.com>"
    assert message["MIME-Version"] == "1.0"
    assert _names(message, "Reply-To") == [("Replies", "replies@example.com")]
    assert message["X-Campaign"] == "spring"
    assert message["List-Unsubscribe"] == "<mailto:u@example.com>"


def test_date_keeps_the_clock_offset() -> None:
    now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))
    composed = compose(_draft(), now=now, make_id=lambda: "x")
    assert b"Date: Tue, 02 Jan 2024 03:04:05 -0500\r\n" in composed.raw


def test_bcc_is_in_the_envelope_only() -> None:
    draft = _draft(bcc=(Address("secret@hidden.example", "Secret Name"),))
    composed = _compose(draft)
    assert b"secret" not in composed.raw.lower() and b"Secret Name" not in composed.raw
    assert composed.envelope_to == ("rcpt@example.net", "secret@hidden.example")


def test_bcc_only_message_has_no_to_header() -> None:
    composed = _compose(_draft(to=(), bcc=(Address("only@example.org"),)))
    assert "To" not in _header_names(composed.raw)
    assert composed.envelope_to == ("only@example.org",)


def test_envelope_is_normalised_and_deduplicated_case_insensitively_in_order() -> None:
    draft = _draft(
        from_=Address(" Sender@Example.COM "),
        to=(Address("b@example.com"), Address("A@example.com")),
        cc=(Address("a@EXAMPLE.com"), Address("c@bücher.de")),
        bcc=(Address("B@example.com"), Address("d@example.com"), Address("C@xn--bcher-kva.de")),
    )
    composed = _compose(draft)
    assert composed.envelope_from == "Sender@example.com"
    assert composed.envelope_to == ("b@example.com", "A@example.com", "c@xn--bcher-kva.de", "d@example.com")


def test_no_recipients_is_refused_on_to() -> None:
    with pytest.raises(ComposeError) as error:
        _compose(_draft(to=()))
    assert error.value.field == "to"


def test_message_id_from_make_id_and_domain() -> None:
    assert _compose(_draft(), make_id=lambda: "abc").message_id == "<abc@example.com>"
    assert _compose(_draft(), make_id=lambda: "abc", domain="mail.test").message_id == "<abc@mail.test>"
    idn = _compose(_draft(from_=Address("x@bücher.de")), make_id=lambda: "abc")
    assert idn.message_id == "<abc@xn--bcher-kva.de>"


def test_message_id_defaults_to_a_uuid4() -> None:
    composed = compose(_draft(), now=NOW)
    assert re.fullmatch(
        r"<[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}@example\.com>", composed.message_id
    )
    assert f"Message-ID: {composed.message_id}\r\n".encode() in composed.raw


@pytest.mark.parametrize("given", ["<given@example.org>", "given@example.org", " <given@example.org> "])
def test_message_id_given_with_or_without_brackets(given: str) -> None:
    composed = _compose(_draft(message_id=given))
    assert composed.message_id == "<given@example.org>"
    assert _parse(composed.raw)["Message-ID"] == "<given@example.org>"


@pytest.mark.parametrize(
    "given", ["no-at-sign", "a b@c.d", "<a@b", "a@b@c", "<>", "x" * 250 + "@a.b", "é@a.b"]
)
def test_invalid_message_id_is_refused(given: str) -> None:
    with pytest.raises(ComposeError) as error:
        _compose(_draft(message_id=given))
    assert error.value.field == "messageId"


def test_misconfigured_id_domain_is_a_programming_error_not_input() -> None:
    with pytest.raises(ValueError) as error:
        _compose(_draft(), domain="bad domain")
    assert not isinstance(error.value, ComposeError)


def test_non_ascii_headers_are_encoded_words() -> None:
    composed = _compose(_draft(from_=Address("a@example.com", "Jöhn"), subject="Grüße"))
    assert re.search(rb"\r\nFrom: =\?utf-8\?[bq]\?[^? ]+\?= <a@example.com>\r\n", b"\r\n" + composed.raw)
    assert re.search(rb"\r\nSubject: =\?utf-8\?[bq]\?[^? ]+\?=\r\n", composed.raw)


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("Plain Name", b"Plain Name <r@example.net>"),
        ("Doe, John", b'"Doe, John" <r@example.net>'),
        ('Say "hi"', b'"Say \\"hi\\"" <r@example.net>'),
        ("back\\slash", b'"back\\\\slash" <r@example.net>'),
        ("(paren)", b'"(paren)" <r@example.net>'),
        ("two  spaces\t", b"two spaces <r@example.net>"),
        ("=?utf-8?q?x?=", b"=?utf-8?b?PT91dGYtOD9xP3g/PQ==?= <r@example.net>"),
    ],
)
def test_ascii_display_names_are_quoted_when_needed(name: str, wire: bytes) -> None:
    composed = _compose(_draft(to=(Address("r@example.net", name),)))
    assert b"To: " + wire + b"\r\n" in composed.raw
    assert _names(_parse(composed.raw), "To") == [(_display(name), "r@example.net")]


def test_empty_display_name_is_no_display_name() -> None:
    composed = _compose(_draft(to=(Address("r@example.net", ""),)))
    assert b"To: r@example.net\r\n" in composed.raw


def test_many_recipients_fold_between_mailboxes() -> None:
    to = tuple(Address(f"user{i}@example.com", f"User Number {i}") for i in range(20))
    composed = _compose(_draft(to=to))
    match = re.search(rb"\r\nTo: (.*?)\r\n(?! )", composed.raw, re.DOTALL)
    assert match is not None
    lines = match.group(1).split(b"\r\n")
    assert len(lines) > 5
    assert all(line.endswith((b">,", b">")) and len(line) <= 78 for line in lines)
    assert _names(_parse(composed.raw), "To") == [(a.name or "", a.address) for a in to]


def test_long_ascii_subject_is_folded_not_encoded() -> None:
    subject = " ".join(f"word{i}" for i in range(60))
    composed = _compose(_draft(subject=subject))
    assert b"=?" not in composed.raw.split(b"\r\n\r\n")[0]
    assert _parse(composed.raw)["Subject"] == subject


def test_subject_with_an_overlong_word_is_encoded_to_fit() -> None:
    subject = "see https://example.com/" + "a" * 1200
    composed = _compose(_draft(subject=subject))
    assert _parse(composed.raw)["Subject"] == subject


def test_long_non_ascii_display_name_is_one_encoded_word() -> None:
    """The CPython workaround: split encoded-words in a name read back with spaces inserted."""
    composed = _compose(_draft(from_=Address("s@example.com", LONG_NAME)))
    from_line = composed.raw.split(b"\r\n")[0]
    assert from_line.startswith(b"From: =?utf-8?") and from_line.count(b"=?") == 1
    assert len(from_line) <= 998


def test_subject_encoded_words_are_short_and_lines_folded() -> None:
    composed = _compose(_draft(subject=LONG_SUBJECT))
    header = composed.raw.split(b"\r\n\r\n")[0]
    subject = header.split(b"Subject: ", 1)[1].split(b"\r\nDate:")[0]
    words = re.findall(rb"=\?[^?]+\?[bq]\?[^?]*\?=", subject)
    assert len(words) > 3 and all(len(word) <= 75 for word in words)
    assert all(len(line) <= 78 for line in (b"Subject: " + subject).split(b"\r\n"))


@pytest.mark.parametrize("text", ["=?utf-8?q?not_encoded?=", "a =?x?q?y?= b", "=?"])
def test_encoded_word_lookalikes_are_kept_literally(text: str) -> None:
    draft = _draft(subject=text, headers=(("X-Literal", text),), to=(Address("t@example.com", text),))
    message = _parse(_compose(draft).raw)
    assert message["Subject"] == text
    assert message["X-Literal"] == text
    assert _names(message, "To") == [(text, "t@example.com")]


def test_ascii_display_name_without_spaces_too_long_for_a_line_is_refused() -> None:
    with pytest.raises(ComposeError, match="998") as error:
        _compose(_draft(to=(Address("t@example.com", "x" * 1000),)))
    assert error.value.field == "to"


def test_overlong_custom_header_name_is_refused() -> None:
    with pytest.raises(ComposeError) as error:
        _compose(_draft(headers=(("X-" + "h" * 1000, "v"),)))
    assert error.value.field == "headers"


def test_overlong_filename_or_content_type_is_refused() -> None:
    for attachment in (
        Attachment(b"", "f" * 256),
        Attachment(b"", content_type="text/plain; x=" + "y" * 250),
    ):
        with pytest.raises(ComposeError, match="over 255") as error:
            _compose(_draft(attachments=(attachment,)))
        assert error.value.field == "attachments"
    # 255 is fine, and reads back whole.
    name = "é" * 251 + ".pdf"
    message = _parse(_compose(_draft(attachments=(Attachment(b"x", name),))).raw)
    assert _attachments(message)[0][0] == name


def test_display_name_too_long_for_one_line_is_refused() -> None:
    with pytest.raises(ComposeError, match="too long") as error:
        _compose(_draft(cc=(Address("c@example.com", "名" * 300),)))
    assert error.value.field == "cc"


def test_custom_headers_keep_order_duplicates_and_text() -> None:
    headers = (
        ("X-Tag", "one"),
        ("X-Tag", "two"),
        ("X-Note", "Grüße aus Köln — 你好"),
        ("X-Long", " ".join(["token"] * 40)),
        ("X-Spaces", "  padded  "),
        ("X-Empty", ""),
        ("X-Long-Word", "https://example.com/" + "p" * 1200),
    )
    message = _parse(_compose(_draft(headers=headers)).raw)
    assert message.get_all("X-Tag") == ["one", "two"]
    for name, value in headers[2:]:
        assert message[name] == value


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "to",
        "CC",
        "bcc",
        "Reply-To",
        "subject",
        "Date",
        "Message-Id",
        "MIME-Version",
        "Content-Type",
        "content-transfer-encoding",
        "Content-Disposition",
    ],
)
def test_custom_headers_cannot_override_structural_ones(name: str) -> None:
    with pytest.raises(ComposeError) as error:
        _compose(_draft(headers=((name, "x"),)))
    assert error.value.field == "headers"


@pytest.mark.parametrize("name", ["", "X Space", "X:Colon", "X-Ünï", "X-\x7f", "X-\t"])
def test_invalid_custom_header_names_are_refused(name: str) -> None:
    with pytest.raises(ComposeError) as error:
        _compose(_draft(headers=((name, "x"),)))
    assert error.value.field == "headers"


# --- header injection: CR or LF in any header-bound input ------------------------------------------------

_INJECTIONS: list[tuple[str, Callable[[str], Draft]]] = [
    ("subject", lambda bad: _draft(subject=bad)),
    ("from", lambda bad: _draft(from_=Address("s@example.com", bad))),
    ("from", lambda bad: _draft(from_=Address(bad))),
    ("to", lambda bad: _draft(to=(Address("t@example.com", bad),))),
    ("to", lambda bad: _draft(to=(Address(bad),))),
    ("cc", lambda bad: _draft(cc=(Address("c@example.com", bad),))),
    ("cc", lambda bad: _draft(cc=(Address(bad),))),
    ("bcc", lambda bad: _draft(bcc=(Address("b@example.com", bad),))),
    ("bcc", lambda bad: _draft(bcc=(Address(bad),))),
    ("replyTo", lambda bad: _draft(reply_to=(Address("r@example.com", bad),))),
    ("replyTo", lambda bad: _draft(reply_to=(Address(bad),))),
    ("headers", lambda bad: _draft(headers=(("X-Name" + bad, "v"),))),
    ("headers", lambda bad: _draft(headers=(("X-Value", bad),))),
    ("messageId", lambda bad: _draft(message_id=bad)),
    ("attachments", lambda bad: _draft(attachments=(Attachment(b"x", filename=bad),))),
    ("attachments", lambda bad: _draft(html="h", attachments=(Attachment(b"x", cid=bad),))),
    ("attachments", lambda bad: _draft(attachments=(Attachment(b"x", content_type=bad),))),
]


@pytest.mark.parametrize("field_and_draft", _INJECTIONS, ids=lambda c: c[0])
@pytest.mark.parametrize("breaker", ["\r\n", "\n", "\r"], ids=["crlf", "lf", "cr"])
def test_line_breaks_in_header_input_are_refused(
    field_and_draft: tuple[str, Callable[[str], Draft]], breaker: str
) -> None:
    field, make = field_and_draft
    for bad in (
        f"evil{breaker}Bcc: victim@example.org",
        f"x@example.com{breaker}",
        f"{breaker}X-Injected: 1",
    ):
        with pytest.raises(ComposeError) as error:
            _compose(make(bad))
        assert error.value.field == field
        assert "line break" in str(error.value)


@pytest.mark.parametrize("bad", ["nul\x00", "esc\x1b[31m", "del\x7f", "vt\x0b"])
def test_control_characters_in_header_text_are_refused(bad: str) -> None:
    with pytest.raises(ComposeError) as error:
        _compose(_draft(subject=bad))
    assert error.value.field == "subject"


def test_lone_surrogates_are_refused_with_their_field() -> None:
    for draft, field in [
        (_draft(subject="a\ud800"), "subject"),
        (_draft(to=(Address("t@example.com", "\udfff"),)), "to"),
        (_draft(text="\ud800"), "text"),
        (_draft(html="\ud800"), "html"),
        (_draft(attachments=(Attachment(b"", "\ud800.txt"),)), "attachments"),
    ]:
        with pytest.raises(ComposeError) as error:
            _compose(draft)
        assert error.value.field == field


def test_whitespace_is_exact_in_subjects_and_normalised_in_display_names() -> None:
    composed = _compose(_draft(subject=" a\tb  c ", to=(Address("t@example.com", " x\t y  z "),)))
    message = _parse(composed.raw)
    assert message["Subject"] == " a\tb  c "
    assert _names(message, "To") == [("x y z", "t@example.com")]


# --- addresses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("user@example.com", "user@example.com"),
        ("  User.Name+tag@Example.COM ", "User.Name+tag@example.com"),
        ("o'brien!#$%&*/=?^_`{|}~-@sub.example.co.uk", "o'brien!#$%&*/=?^_`{|}~-@sub.example.co.uk"),
        ("user@bücher.de", "user@xn--bcher-kva.de"),
        ("user@BÜCHER.de", "user@xn--bcher-kva.de"),
        ("user@例え.テスト", "user@xn--r8jz45g.xn--zckzah"),
        ("user@xn--bcher-kva.de", "user@xn--bcher-kva.de"),
        ("user@[192.0.2.1]", "user@[192.0.2.1]"),
        ("user@[IPv6:2001:DB8:0:0:0:0:0:1]", "user@[IPv6:2001:db8::1]"),
        ("a@b-c.d2", "a@b-c.d2"),
        ("x" * 64 + "@example.com", "x" * 64 + "@example.com"),
    ],
)
def test_validate_address_accepts_and_normalises(given: str, normalised: str) -> None:
    assert validate_address(given, "to") == normalised


@pytest.mark.parametrize(
    "given",
    [
        "",
        "plain",
        "@example.com",
        "user@",
        "user@localhost",
        "user name@example.com",
        "user@exa mple.com",
        ".user@example.com",
        "user.@example.com",
        "us..er@example.com",
        '"quoted"@example.com',
        "ünï@example.com",
        "user@example..com",
        "user@example.com.",
        "user@-example.com",
        "user@example-.com",
        "user@exa_mple.com",
        "user@example.123",
        "user@1.2.3.4",
        "user@[1.2.3]",
        "user@[IPv6:nonsense]",
        "x" * 65 + "@example.com",
        "user@" + "a" * 64 + ".com",
        "user@" + ".".join(["abcdefghij"] * 23) + ".com",
        "<user@example.com>",
        "Name <user@example.com>",
        "user@example.com, other@example.com",
    ],
)
def test_validate_address_refuses(given: str) -> None:
    with pytest.raises(ComposeError) as error:
        validate_address(given, "cc")
    assert error.value.field == "cc"


def test_invalid_recipient_reports_its_field() -> None:
    for draft, field in [
        (_draft(from_=Address("nope")), "from"),
        (_draft(to=(RCPT, Address("nope"))), "to"),
        (_draft(cc=(Address("nope"),)), "cc"),
        (_draft(bcc=(Address("nope"),)), "bcc"),
        (_draft(reply_to=(Address("nope"),)), "replyTo"),
    ]:
        with pytest.raises(ComposeError) as error:
            _compose(draft)
        assert error.value.field == field


# --- fidelity: round trips -----------------------------------------------------------------------------

RICH = _draft(
    from_=Address("sender@example.com", LONG_NAME),
    to=(
        Address("jo@example.net", COMMA_NAME),
        Address("ceo@bücher.de", ASCII_TRICKY_NAME),
        Address("bare@example.net"),
    ),
    cc=(Address("cc@example.org", "山田 太郎"), Address("emoji@example.org", "🦄🦄 🦄")),
    reply_to=(Address("reply@example.com", " Leading and trailing spaces "),),
    subject=LONG_SUBJECT,
    text="Bonjour 👋\n\nLigne avec espaces en fin   \n\tTabulation\n" + "長い行" * 400 + "\nfin",
    html='<p style="x">Grüße — 你好 <img src="cid:logo.1@example.com"></p>\n' + "<i>é</i>" * 900,
    attachments=(
        Attachment(b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "logo ✓.png", cid="logo.1@example.com"),
        Attachment(bytes(range(255, -1, -1)) * 3, "Rapport trimestriel — résumé 季度报告 (final, v2) 📊.pdf"),
        Attachment(b"plain ascii\n", 'quote"and\\backslash;semicolon.txt'),
        Attachment(b"\x00\x01", "x" * 120 + ".bin"),
    ),
    headers=(("X-Mixed", "Zürich → 東京, déjà vu 🎌 " * 4), ("X-Plain", "ascii value")),
)


def test_rich_message_round_trips_through_python() -> None:
    composed = _compose(RICH)
    message = _parse(composed.raw)
    assert len(LONG_SUBJECT) == 200 and len(LONG_NAME) == 120
    assert message["Subject"] == LONG_SUBJECT
    assert _names(message, "From") == [(LONG_NAME, "sender@example.com")]
    assert _names(message, "To") == [
        (COMMA_NAME, "jo@example.net"),
        (ASCII_TRICKY_NAME, "ceo@xn--bcher-kva.de"),
        ("", "bare@example.net"),
    ]
    assert _names(message, "Cc") == [("山田 太郎", "cc@example.org"), ("🦄🦄 🦄", "emoji@example.org")]
    assert _names(message, "Reply-To") == [("Leading and trailing spaces", "reply@example.com")]
    assert _body(message, "plain") == _canonical(RICH.text or "")
    assert _body(message, "html") == _canonical(RICH.html or "")
    assert _attachments(message) == [
        (a.filename, _attachment_type(a.filename), a.cid, a.content) for a in RICH.attachments
    ]
    for name, value in RICH.headers:
        assert message[name] == value
    assert not [d for part in message.walk() for d in part.defects]


def _attachment_type(filename: str | None) -> str:
    suffix = (filename or "").rpartition(".")[2]
    return {"png": "image/png", "pdf": "application/pdf", "txt": "text/plain"}.get(
        suffix, "application/octet-stream"
    )


def test_rich_message_round_trips_through_mailparser(node_parse: NodeParse) -> None:
    parsed = node_parse(_compose(RICH).raw)
    assert parsed["subject"] == LONG_SUBJECT
    assert _node_addresses(parsed, "from") == [(LONG_NAME, "sender@example.com")]
    assert _node_addresses(parsed, "to") == [
        (COMMA_NAME, "jo@example.net"),
        (ASCII_TRICKY_NAME, "ceo@bücher.de"),
        ("", "bare@example.net"),
    ]
    assert _node_addresses(parsed, "cc") == [
        ("山田 太郎", "cc@example.org"),
        ("🦄🦄 🦄", "emoji@example.org"),
    ]
    assert _node_addresses(parsed, "replyTo") == [("Leading and trailing spaces", "reply@example.com")]
    assert parsed["bcc"] == []
    assert parsed["text"] == _canonical(RICH.text or "")
    assert parsed["html"] == _canonical(RICH.html or "")
    assert [
        (a["filename"], a["contentType"], a["cid"], base64.b64decode(a["content"]))
        for a in parsed["attachments"]
    ] == [(a.filename, _attachment_type(a.filename), a.cid, a.content) for a in RICH.attachments]
    assert parsed["headers"]["x-plain"] == "ascii value"


def test_parse_js_reads_one_message_from_stdin(node_parse: NodeParse) -> None:
    node = shutil.which("node")
    assert node is not None
    raw = _compose(_draft(subject="Ça va?", text="hi")).raw
    result = subprocess.run(
        [node, str(JS_DIR / "parse.js")], input=raw, capture_output=True, check=True, timeout=30
    )
    parsed = json.loads(result.stdout)
    assert parsed["subject"] == "Ça va?"
    assert parsed["text"] == "hi\n"
    assert parsed["messageId"] == "<test-id@example.com>"


# Header text: anything but the refused controls (CR, LF, other C0, DEL) and lone surrogates.
_HEADER_CHARS = st.characters(
    exclude_categories=["Cs"],
    exclude_characters="".join(chr(c) for c in range(32) if c != 9) + "\x7f",
)
# Up to 150 characters: several encoded-words for a subject, and still a name that fits one.
_header_text = st.text(_HEADER_CHARS, max_size=150) | st.text(
    st.sampled_from(" ,\"'()<>@;:\\.=?_-aé漢😀\t"), max_size=40
)
_body_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=400)
_FUZZ = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(subject=_header_text, name=_header_text, other=_header_text, text=_body_text)
def test_random_unicode_round_trips_through_python(subject: str, name: str, other: str, text: str) -> None:
    draft = _draft(
        from_=Address("s@example.com", name),
        to=(Address("t@example.com", other), Address("u@example.com", name)),
        subject=subject,
        text=text,
        headers=(("X-Random", other),),
        # Short: the library's RFC 2231 folding is quadratic in the filename's length.
        attachments=(Attachment(text.encode(), filename=other[:40] or None),),
    )
    message = _parse(_compose(draft).raw)
    assert message["Subject"] == subject
    assert _names(message, "From") == [(_display(name), "s@example.com")]
    assert _names(message, "To") == [(_display(other), "t@example.com"), (_display(name), "u@example.com")]
    assert message["X-Random"] == other
    assert _body(message, "plain") == _canonical(text)
    ((filename, _, _, content),) = _attachments(message)
    assert filename == (other[:40].strip() or None)
    assert content == text.encode()


@settings(_FUZZ, max_examples=50)  # node's parse is the cost here
@given(subject=_header_text, name=_header_text, other=_header_text, text=_body_text)
def test_random_unicode_round_trips_through_mailparser(
    node_parse: NodeParse, subject: str, name: str, other: str, text: str
) -> None:
    draft = _draft(
        from_=Address("s@example.com", name),
        to=(Address("t@example.com", other),),
        subject=subject,
        text=text,
        attachments=(Attachment(text.encode(), filename=other[:40] or None, cid="c@x"),),
        html="<p>x</p>",
    )
    parsed = node_parse(_compose(draft).raw)
    assert (parsed["subject"] or "") == subject  # mailparser reports an empty Subject as absent
    assert _node_addresses(parsed, "from") == [(_display(name), "s@example.com")]
    assert _node_addresses(parsed, "to") == [(_display(other), "t@example.com")]
    assert parsed["text"] == _canonical(text)
    ((attachment),) = parsed["attachments"]
    assert attachment["filename"] == (other[:40].strip() or None)
    assert attachment["cid"] == "c@x"
    assert base64.b64decode(attachment["content"]) == text.encode()


def test_unicode_is_not_normalised() -> None:
    decomposed = unicodedata.normalize("NFD", "Ünïcödé")
    message = _parse(_compose(_draft(subject=decomposed, to=(Address("t@example.com", decomposed),))).raw)
    assert message["Subject"] == decomposed
    assert _names(message, "To") == [(decomposed, "t@example.com")]


@pytest.mark.parametrize("size", [0, 1, 56, 57, 58, 196_592, 196_593, 196_650, 600_001])
def test_attachments_are_written_as_the_library_writes_them(size: int) -> None:
    """compose writes an attachment's base64 from its bytes, a slice at a time (mail/compose.py
    `_Generator`): the lines are those of the library's `set_content` (76 characters, CRLF) across slice
    boundaries, and the library generates the same bytes again from the parsed message."""
    blob = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    raw = _compose(_draft(text="t", attachments=(Attachment(blob, "blob.bin"),))).raw
    start = raw.index(b"\r\n\r\n", raw.index(b'filename="blob.bin"')) + 4
    end = raw.index(b"\r\n--=_", start)
    assert raw[start:end] == base64.encodebytes(blob).replace(b"\n", b"\r\n")
    policy = email.policy.SMTP.clone(cte_type="7bit", utf8=False, refold_source="none")
    assert email.message_from_bytes(raw, policy=policy).as_bytes() == raw
    _assert_wire_format(raw)
