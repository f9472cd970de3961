"""gql_mail.mail.smtp against a real SMTP server (aiosmtpd), and the SMTP error table."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator

import aiosmtplib
import pytest

from gql_mail.mail.errors import MailError, classify_smtp_exception, is_permanent_reply
from gql_mail.mail.smtp import SmtpConnection, SmtpSettings, verify_smtp
from tests.servers.smtp import SelfSignedCert, SmtpServer


def settings_for(server: SmtpServer, **overrides: object) -> SmtpSettings:
    values: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "timeout": 5.0,
        "local_hostname": "client.test",
    }
    values.update(overrides)
    return SmtpSettings(**values)  # type: ignore[arg-type]


def message(message_id: str, subject: str = "Hello") -> bytes:
    return (
        f"From: Sender <sender@example.com>\r\nTo: rcpt@example.net\r\nSubject: {subject}\r\n"
        f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nHi there.\r\n.leading dot stays\r\n"
    ).encode()


async def send_one(server: SmtpServer, raw: bytes, recipients: list[str], **overrides: object) -> None:
    async with SmtpConnection(settings_for(server, **overrides)) as conn:
        await conn.send("sender@example.com", recipients, raw)


# -- login ---------------------------------------------------------------------------------------------


async def test_verify_ok(smtp_server: SmtpServer) -> None:
    await verify_smtp(settings_for(smtp_server))
    assert smtp_server.connection_count == 1


async def test_wrong_password_is_permanent_auth_failure(smtp_server: SmtpServer) -> None:
    with pytest.raises(MailError) as info:
        await verify_smtp(settings_for(smtp_server, password="wrong"))
    err = info.value
    assert (err.code, err.smtp_code, err.permanent, err.auth_failure) == ("EAUTH", 535, True, True)
    assert err.response is not None and err.response.startswith("535 5.7.8")


async def test_password_changed_on_server(smtp_server: SmtpServer) -> None:
    settings = settings_for(smtp_server)
    smtp_server.set_password("rotated")
    with pytest.raises(MailError) as info:
        await verify_smtp(settings)
    assert info.value.auth_failure
    await verify_smtp(settings_for(smtp_server, password="rotated"))


async def test_xoauth2(smtp_server: SmtpServer) -> None:
    await verify_smtp(settings_for(smtp_server, password=None, access_token="valid-token"))
    with pytest.raises(MailError) as info:
        await verify_smtp(settings_for(smtp_server, password=None, access_token="expired"))
    assert (info.value.code, info.value.smtp_code, info.value.auth_failure) == ("EAUTH", 535, True)


async def test_credentials_but_no_auth_offered() -> None:
    with SmtpServer(auth=False) as server:
        with pytest.raises(MailError) as info:
            await verify_smtp(settings_for(server))
        assert (info.value.code, info.value.permanent, info.value.auth_failure) == ("EAUTH", True, True)
        # Without credentials the same server is fine (IP-authorised relays exist).
        await verify_smtp(settings_for(server, user=None, password=None))


async def test_closed_port_is_transient_connection_error(closed_port: int) -> None:
    with pytest.raises(MailError) as info:
        await verify_smtp(SmtpSettings(host="127.0.0.1", port=closed_port, timeout=2))
    assert (info.value.code, info.value.permanent, info.value.auth_failure) == ("ECONNECTION", False, False)


async def test_server_that_never_answers_times_out(silent_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(MailError) as info:
        await verify_smtp(SmtpSettings(host="127.0.0.1", port=silent_port, timeout=0.3))
    assert info.value.code == "ETIMEDOUT" and not info.value.permanent
    assert time.monotonic() - started < 2


# -- sending -------------------------------------------------------------------------------------------


async def test_send_returns_server_reply(smtp_server: SmtpServer) -> None:
    raw = message("send-ok@test")
    async with SmtpConnection(settings_for(smtp_server)) as conn:
        result = await conn.send("sender@example.com", ["rcpt@example.net"], raw)
        assert conn.usable
    assert result.response.startswith("250 2.0.0 Ok: queued as Q")
    assert result.accepted == ("rcpt@example.net",) and result.rejected == {}
    (received,) = await smtp_server.wait_for_messages(1)
    assert received.data == raw  # dot-stuffing undone, bytes intact
    assert received.mail_from == "sender@example.com"
    assert received.rcpt_tos == ("rcpt@example.net",)
    assert received.auth_user == smtp_server.user
    assert "SMTPUTF8" not in received.mail_options  # ASCII message: don't ask for what isn't needed


async def test_connection_reused_for_three_messages(smtp_server: SmtpServer) -> None:
    async with SmtpConnection(settings_for(smtp_server)) as conn:
        for i in range(3):
            await conn.send("sender@example.com", ["rcpt@example.net"], message(f"reuse-{i}@test"))
    received = await smtp_server.wait_for_messages(3)
    assert {m.connection_id for m in received} == {1}
    assert smtp_server.connection_count == 1


async def test_451_on_data_is_transient_and_connection_unusable(smtp_server: SmtpServer) -> None:
    smtp_server.fail_next(1, code=451, message="4.3.0 Mail server temporarily rejected message")
    async with SmtpConnection(settings_for(smtp_server)) as conn:
        with pytest.raises(MailError) as info:
            await conn.send("sender@example.com", ["rcpt@example.net"], message("t451@test"))
        assert not conn.usable
        with pytest.raises(MailError) as again:
            await conn.send("sender@example.com", ["rcpt@example.net"], message("t451b@test"))
        assert again.value.code == "ECONNECTION"
    err = info.value
    assert (err.code, err.smtp_code, err.permanent) == ("EMESSAGE", 451, False)
    assert err.response == "451 4.3.0 Mail server temporarily rejected message"
    await send_one(smtp_server, message("t451c@test"), ["rcpt@example.net"])  # a new connection works
    assert len(await smtp_server.wait_for_messages(1)) == 1


async def test_550_for_all_recipients_is_permanent_envelope_error(smtp_server: SmtpServer) -> None:
    smtp_server.reject_recipients(
        {
            "gone@example.net": (550, "5.1.1 <gone@example.net>: Recipient address rejected"),
            "nope@example.net": (550, "5.1.1 <nope@example.net>: Recipient address rejected"),
        }
    )
    with pytest.raises(MailError) as info:
        await send_one(smtp_server, message("all-rejected@test"), ["gone@example.net", "nope@example.net"])
    err = info.value
    assert (err.code, err.smtp_code, err.permanent, err.auth_failure) == ("EENVELOPE", 550, True, False)
    assert err.response == "550 5.1.1 <gone@example.net>: Recipient address rejected"
    assert smtp_server.messages == []


async def test_all_rejected_with_one_temporary_refusal_is_transient(smtp_server: SmtpServer) -> None:
    smtp_server.reject_recipients(
        {"full@example.net": (452, "4.2.2 Mailbox full"), "gone@example.net": (550, "5.1.1 No such user")}
    )
    with pytest.raises(MailError) as info:
        await send_one(smtp_server, message("mixed@test"), ["gone@example.net", "full@example.net"])
    assert (info.value.code, info.value.smtp_code, info.value.permanent) == ("EENVELOPE", 550, False)


async def test_partial_rejection_is_reported(smtp_server: SmtpServer) -> None:
    smtp_server.reject_recipients({"gone@example.net": (550, "5.1.1 <gone@example.net>: User unknown")})
    async with SmtpConnection(settings_for(smtp_server)) as conn:
        result = await conn.send(
            "sender@example.com",
            ["a@example.net", "gone@example.net", "b@example.net"],
            message("partial@test"),
        )
        assert conn.usable
    assert result.accepted == ("a@example.net", "b@example.net")
    assert result.rejected == {"gone@example.net": (550, "5.1.1 <gone@example.net>: User unknown")}
    (received,) = await smtp_server.wait_for_messages(1)
    assert received.rcpt_tos == ("a@example.net", "b@example.net")


async def test_refused_sender(smtp_server: SmtpServer) -> None:
    smtp_server.fail_next(
        1, code=553, message="5.7.1 Sender address rejected: not owned by user", stage="MAIL"
    )
    with pytest.raises(MailError) as info:
        await send_one(smtp_server, message("sender-refused@test"), ["rcpt@example.net"])
    assert (info.value.code, info.value.smtp_code, info.value.permanent) == ("EENVELOPE", 553, True)


async def test_slow_server_times_out(smtp_server: SmtpServer) -> None:
    smtp_server.delay_data(2.0)
    started = time.monotonic()
    async with SmtpConnection(settings_for(smtp_server, timeout=0.3)) as conn:
        with pytest.raises(MailError) as info:
            await conn.send("sender@example.com", ["rcpt@example.net"], message("slow@test"))
        assert not conn.usable
    assert info.value.code == "ETIMEDOUT" and not info.value.permanent
    assert time.monotonic() - started < 1.5


async def test_connection_dropped_in_data_is_transient(smtp_server: SmtpServer) -> None:
    smtp_server.close_in_data()
    async with SmtpConnection(settings_for(smtp_server)) as conn:
        with pytest.raises(MailError) as info:
            await conn.send("sender@example.com", ["rcpt@example.net"], message("dropped@test"))
        assert not conn.usable
    assert (info.value.code, info.value.permanent) == ("ECONNECTION", False)


async def test_smtputf8_only_when_needed(smtp_server: SmtpServer) -> None:
    raw = "From: a@example.com\r\nSubject: Grüße\r\nMessage-ID: <utf8@test>\r\n\r\nHallo\r\n".encode()
    await send_one(smtp_server, raw, ["jürgen@exämple.de"])
    (received,) = await smtp_server.wait_for_messages(1)
    assert "SMTPUTF8" in received.mail_options
    assert received.rcpt_tos == ("jürgen@exämple.de",)
    assert received.data == raw


async def test_no_recipients_is_permanent(smtp_server: SmtpServer) -> None:
    with pytest.raises(MailError) as info:
        await send_one(smtp_server, message("none@test"), [])
    assert (info.value.code, info.value.permanent) == ("EENVELOPE", True)


async def test_address_with_smtp_syntax_is_refused_before_sending(smtp_server: SmtpServer) -> None:
    with pytest.raises(MailError) as info:
        await send_one(smtp_server, message("inject@test"), ["a@example.net> NOTIFY=NEVER"])
    assert (info.value.code, info.value.permanent) == ("EENVELOPE", True)


# -- TLS -----------------------------------------------------------------------------------------------


@pytest.fixture
def starttls_server(self_signed_cert: SelfSignedCert) -> Iterator[SmtpServer]:
    with SmtpServer(tls_context=self_signed_cert.server_context()) as server:
        yield server


async def test_starttls_self_signed_accepted_when_not_verifying(starttls_server: SmtpServer) -> None:
    await send_one(starttls_server, message("starttls@test"), ["rcpt@example.net"], reject_unauthorized=False)
    (received,) = await starttls_server.wait_for_messages(1)
    assert received.tls


async def test_starttls_self_signed_refused_when_verifying(starttls_server: SmtpServer) -> None:
    with pytest.raises(MailError) as info:
        await verify_smtp(settings_for(starttls_server, reject_unauthorized=True))
    assert (info.value.code, info.value.permanent, info.value.auth_failure) == ("ETLS", False, False)
    assert "certificate" in str(info.value)


async def test_implicit_tls(self_signed_cert: SelfSignedCert) -> None:
    with SmtpServer(implicit_tls_context=self_signed_cert.server_context()) as server:
        await send_one(
            server, message("tls@test"), ["rcpt@example.net"], secure=True, reject_unauthorized=False
        )
        (received,) = await server.wait_for_messages(1)
        assert received.tls
        with pytest.raises(MailError) as info:
            await verify_smtp(settings_for(server, secure=True))
        assert info.value.code == "ETLS"


# -- the error table -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "permanent"),
    [
        (421, "4.7.0 Try again later, closing connection", False),
        (450, "4.2.1 Rate limited", False),
        (451, "4.3.0 Temporary failure", False),
        (550, "5.1.1 User unknown", True),
        (554, "5.7.1 Message rejected as spam", True),
        (550, "5.4.5 Daily sending quota exceeded", False),
        (550, "5.7.1 Our system has detected ... exceeded recipient rate limit", False),
        (552, "5.3.4 Message size exceeds fixed limit", True),
        (550, "4.2.2 Mailbox full", False),  # the enhanced code says temporary
    ],
)
def test_reply_table(code: int, text: str, permanent: bool) -> None:
    assert is_permanent_reply(code, text) is permanent


@pytest.mark.parametrize(
    ("exc", "code", "permanent", "auth_failure"),
    [
        (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 Bad credentials"), "EAUTH", True, True),
        (
            aiosmtplib.SMTPAuthenticationError(534, "5.7.9 Application-specific password required"),
            "EAUTH",
            True,
            True,
        ),
        (
            aiosmtplib.SMTPAuthenticationError(454, "4.7.0 Temporary authentication failure"),
            "EAUTH",
            False,
            False,
        ),
        (aiosmtplib.SMTPSenderRefused(530, "5.7.0 Authentication required", "a@b"), "EAUTH", True, True),
        (aiosmtplib.SMTPRecipientRefused(552, "5.5.3 Too many recipients", "a@b"), "EENVELOPE", False, False),
        (aiosmtplib.SMTPDataError(554, "5.6.0 Message malformed"), "EMESSAGE", True, False),
        (aiosmtplib.SMTPConnectResponseError(554, "No SMTP service here"), "ECONNECTION", False, False),
        (aiosmtplib.SMTPServerDisconnected("Connection lost"), "ECONNECTION", False, False),
        (aiosmtplib.SMTPReadTimeoutError("Timed out"), "ETIMEDOUT", False, False),
        (aiosmtplib.SMTPConnectTimeoutError("Timed out connecting"), "ETIMEDOUT", False, False),
        (TimeoutError(), "ETIMEDOUT", False, False),
        (ConnectionResetError(104, "Connection reset by peer"), "ECONNECTION", False, False),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "ETLS", False, False),
        (ValueError("Address contains characters not permitted"), "EENVELOPE", True, False),
    ],
)
def test_classification(exc: BaseException, code: str, permanent: bool, auth_failure: bool) -> None:
    err = classify_smtp_exception(exc)
    assert (err.code, err.permanent, err.auth_failure) == (code, permanent, auth_failure)


def test_tls_error_wrapped_by_connect_error_is_etls() -> None:
    wrapped = aiosmtplib.SMTPConnectError("Error connecting to x on port 465")
    wrapped.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert classify_smtp_exception(wrapped).code == "ETLS"
