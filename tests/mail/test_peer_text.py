"""gql_mail.mail.peer_text, and what the mail layer makes of a server answering in Latin-1 (real peers:
aiosmtpd sending raw bytes, a tiny IMAP server refusing LOGIN in Latin-1)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import orjson
import pytest

from gql_mail.mail.errors import MailError, classify_imap_exception, reply_text
from gql_mail.mail.imap import ImapSettings, verify_imap
from gql_mail.mail.peer_text import MAX_PEER_TEXT, TRUNCATED, peer_text
from gql_mail.mail.smtp import SmtpConnection, SmtpSettings, verify_smtp
from tests.servers.imap_refusing import RefusingImapServer
from tests.servers.smtp import SmtpServer

RAW = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: x\r\nMessage-ID: <latin1@test>\r\n\r\nbody\r\n"
ACCEPTED = b"250 2.0.0 Message accept\xe9 \xe0 la livraison"


def storable(text: str) -> None:
    """What the records need: UTF-8 encodable, JSON-serialisable, no NUL (PostgreSQL refuses it in text)."""
    text.encode("utf-8")
    orjson.dumps(text)
    assert "\x00" not in text
    sqlite3.connect(":memory:").execute("select ?", (text,))


# -- the rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("250 2.0.0 Ok: queued as ABC", "250 2.0.0 Ok: queued as ABC"),
        # aiosmtplib's surrogateescape'd Latin-1 bytes: one U+FFFD each
        (ACCEPTED.decode("utf-8", "surrogateescape"), "250 2.0.0 Message accept\ufffd \ufffd la livraison"),
        (ACCEPTED, "250 2.0.0 Message accept\ufffd \ufffd la livraison"),  # bytes that aren't UTF-8
        ("Déjà vu 日本", "Déjà vu 日本"),  # valid text is kept as it is
        ("d\udcc3\udca9j\udcc3\udca0", "déjà"),  # UTF-8 escaped byte by byte comes back whole
        ("lone \ud800 high, lone \udc00 low", "lone \ufffd high, lone \ufffd low"),
        ("nul\x00 bell\x07 esc\x1b del\x7f csi\x9b end", "nul bell esc del csi end"),
        ("550-5.1.1 first\r\n550 5.1.1 second\tline\u2028x", "550-5.1.1 first 550 5.1.1 second line x"),
        ("  padded  ", "padded"),
        (b"", ""),
    ],
)
def test_rules(given: str | bytes, shown: str) -> None:
    assert peer_text(given) == shown
    storable(peer_text(given))
    assert peer_text(peer_text(given)) == peer_text(given), "idempotent"


@pytest.mark.parametrize("size", [MAX_PEER_TEXT + 1, 10 * MAX_PEER_TEXT, 5_000_000])
def test_long_text_is_bounded_and_marked(size: int) -> None:
    shown = peer_text("550 " + "x\udce9" * (size // 2))
    assert len(shown) == MAX_PEER_TEXT and shown.endswith(TRUNCATED)
    assert shown.startswith("550 x\ufffdx\ufffd")
    storable(shown)
    assert peer_text(shown) == shown


def test_text_at_the_bound_is_kept_whole() -> None:
    text = "y" * MAX_PEER_TEXT
    assert peer_text(text) == text


def test_every_error_and_reply_passes_through_it() -> None:
    """MailError's message and response and `reply_text` are made safe however they were built."""
    err = MailError("Invalid login: 535 refus\udce9\x00", code="EAUTH", response="535 refus\udce9\x00")
    assert (err.message, err.response, str(err)) == (
        "Invalid login: 535 refus\ufffd",
        "535 refus\ufffd",
        "Invalid login: 535 refus\ufffd",
    )
    assert reply_text(451, "4.3.0 R\udce9essayez\r\n plus tard") == "451 4.3.0 R\ufffdessayez plus tard"
    library = classify_imap_exception(type("Abort", (Exception,), {})("unexpected b'\\xe9' \udce9"))
    assert library.message == "IMAP protocol error: unexpected b'\\xe9' \ufffd"


# -- SMTP: a server answering in Latin-1 ------------------------------------------------------------------


@pytest.fixture
def latin1_smtp(smtp_server: SmtpServer) -> Iterator[SmtpServer]:
    smtp_server.set_greeting(b"220 smtp.test ESMTP Bienvenue \xe0 bord")
    yield smtp_server


def settings(server: SmtpServer, password: str | None = None) -> SmtpSettings:
    return SmtpSettings(
        host=server.host,
        port=server.port,
        user=server.user,
        password=password or server.password,
        timeout=5.0,
        local_hostname="client.test",
    )


async def test_accepted_reply_and_refused_recipient(latin1_smtp: SmtpServer) -> None:
    latin1_smtp.set_accept_reply(ACCEPTED)
    latin1_smtp.reject_recipients({"x@example.net": (550, b"5.1.1 Destinataire inconnu \xe0 ce domaine")})
    async with SmtpConnection(settings(latin1_smtp)) as connection:
        result = await connection.send("a@example.com", ["b@example.net", "x@example.net"], RAW)
    assert result.response == "250 2.0.0 Message accept\ufffd \ufffd la livraison"
    assert result.rejected == {"x@example.net": (550, "5.1.1 Destinataire inconnu \ufffd ce domaine")}
    assert len(await latin1_smtp.wait_for_messages(1)) == 1


@pytest.mark.parametrize(
    ("code", "text", "permanent"),
    [(451, b"4.3.0 R\xe9essayez plus tard", False), (550, b"5.7.1 Message refus\xe9", True)],
)
async def test_refused_data(latin1_smtp: SmtpServer, code: int, text: bytes, permanent: bool) -> None:
    latin1_smtp.fail_next(1, code=code, message=text)
    with pytest.raises(MailError) as info:
        async with SmtpConnection(settings(latin1_smtp)) as connection:
            await connection.send("a@example.com", ["b@example.net"], RAW)
    err = info.value
    shown = f"{code} {text.decode('latin-1').replace('é', chr(0xFFFD))}"
    assert (err.code, err.smtp_code, err.permanent, err.response) == ("EMESSAGE", code, permanent, shown)
    assert err.message == f"Message failed: {shown}"
    storable(err.message)


async def test_refused_login(latin1_smtp: SmtpServer) -> None:
    latin1_smtp.set_auth_refusal(b"535 5.7.8 Identifiants refus\xe9s")
    with pytest.raises(MailError) as info:
        await verify_smtp(settings(latin1_smtp, password="wrong"))
    err = info.value
    assert (err.code, err.auth_failure, err.permanent) == ("EAUTH", True, True)
    assert err.response == "535 5.7.8 Identifiants refus\ufffds"


async def test_refusing_greeting(smtp_server: SmtpServer) -> None:
    smtp_server.set_greeting(b"554 5.3.2 Serveur surcharg\xe9")
    with pytest.raises(MailError) as info:
        await verify_smtp(settings(smtp_server))
    err = info.value
    assert (err.code, err.smtp_code, err.permanent) == ("ECONNECTION", 554, False)
    assert err.response == "554 5.3.2 Serveur surcharg\ufffd"


# -- IMAP: LOGIN refused in Latin-1 ------------------------------------------------------------------------


async def test_imap_login_refused_in_latin1() -> None:
    with RefusingImapServer(b"NO [AUTHENTICATIONFAILED] Identifiants invalides \xe9\x00") as imap:
        with pytest.raises(MailError) as info:
            await verify_imap(ImapSettings(host=imap.host, port=imap.port, user="u", password="p", timeout=5))
    err = info.value
    assert (err.code, err.auth_failure, err.permanent) == ("EAUTH", True, True)
    assert err.response == "NO [AUTHENTICATIONFAILED] Identifiants invalides \ufffd"
    assert err.message == "Invalid login: NO [AUTHENTICATIONFAILED] Identifiants invalides \ufffd"
