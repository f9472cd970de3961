"""gql_mail.mail.imap against a real IMAP server (pymap), plus scripted stubs for what pymap can't do."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import pytest

from gql_mail.mail.errors import MailError
from gql_mail.mail.imap import (
    ImapSettings,
    _parse_list,
    append_to_sent,
    decode_mailbox,
    encode_mailbox,
    find_sent_folder,
    verify_imap,
)
from tests.servers.imap import ImapServer
from tests.servers.smtp import SelfSignedCert


def settings_for(server: ImapServer, **overrides: object) -> ImapSettings:
    values: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "timeout": 5.0,
    }
    values.update(overrides)
    return ImapSettings(**values)  # type: ignore[arg-type]


def message(message_id: str) -> bytes:
    return (
        f"From: sender@example.com\r\nTo: rcpt@example.net\r\nSubject: Copy to Sent\r\n"
        f"Message-ID: <{message_id}>\r\n\r\nThe body.\r\n"
    ).encode()


# -- against pymap -------------------------------------------------------------------------------------


async def test_verify_ok(imap_server: ImapServer) -> None:
    await verify_imap(settings_for(imap_server))


async def test_wrong_password_is_permanent_auth_failure(imap_server: ImapServer) -> None:
    with pytest.raises(MailError) as info:
        await verify_imap(settings_for(imap_server, password="wrong"))
    err = info.value
    assert (err.code, err.permanent, err.auth_failure, err.smtp_code) == ("EAUTH", True, True, None)
    assert err.response is not None and "AUTHENTICATIONFAILED" in err.response


async def test_append_to_named_sent_folder(imap_server: ImapServer) -> None:
    message_id = f"{uuid.uuid4()}@test"
    raw = message(message_id)
    folder = await append_to_sent(settings_for(imap_server), raw, "Sent")
    assert folder == "Sent"
    stored = await imap_server.find("Sent", message_id)
    assert stored is not None
    assert stored.raw == raw
    assert "\\Seen" in stored.flags


async def test_bare_lf_message_is_stored_with_crlf(imap_server: ImapServer) -> None:
    message_id = f"{uuid.uuid4()}@test"
    raw = message(message_id).replace(b"\r\n", b"\n")
    await append_to_sent(settings_for(imap_server), raw, "Sent")
    stored = await imap_server.find("Sent", message_id)
    assert stored is not None and stored.raw == raw.replace(b"\n", b"\r\n")


async def test_pymap_has_no_sent_flag(imap_server: ImapServer) -> None:
    assert await find_sent_folder(settings_for(imap_server)) is None


async def test_append_without_folder_and_without_sent_flag_fails(imap_server: ImapServer) -> None:
    with pytest.raises(MailError) as info:
        await append_to_sent(settings_for(imap_server), message("no-folder@test"), None)
    assert (info.value.code, info.value.permanent) == ("EPROTOCOL", True)


async def test_append_to_missing_folder_is_permanent(imap_server: ImapServer) -> None:
    with pytest.raises(MailError) as info:
        await append_to_sent(settings_for(imap_server), message("missing@test"), "Does Not Exist")
    assert (info.value.code, info.value.permanent) == ("EPROTOCOL", True)
    assert info.value.response is not None and "TRYCREATE" in info.value.response


async def test_closed_port_is_connection_error(closed_port: int) -> None:
    with pytest.raises(MailError) as info:
        await verify_imap(ImapSettings(host="127.0.0.1", port=closed_port, user="u", password="p", timeout=2))
    assert (info.value.code, info.value.permanent, info.value.auth_failure) == ("ECONNECTION", False, False)


async def test_server_that_never_answers_times_out(silent_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(MailError) as info:
        await verify_imap(
            ImapSettings(host="127.0.0.1", port=silent_port, user="u", password="p", timeout=0.3)
        )
    assert info.value.code == "ETIMEDOUT"
    assert time.monotonic() - started < 2


# -- STARTTLS (pymap with a certificate) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def imap_tls_server(self_signed_cert: SelfSignedCert) -> Iterator[ImapServer]:
    with ImapServer(cert=self_signed_cert) as server:
        yield server


async def test_starttls_self_signed_accepted_when_not_verifying(imap_tls_server: ImapServer) -> None:
    message_id = f"{uuid.uuid4()}@test"
    await append_to_sent(
        settings_for(imap_tls_server, reject_unauthorized=False), message(message_id), "Sent"
    )
    assert await imap_tls_server.find("Sent", message_id) is not None


async def test_starttls_self_signed_refused_when_verifying(imap_tls_server: ImapServer) -> None:
    with pytest.raises(MailError) as info:
        await verify_imap(settings_for(imap_tls_server, reject_unauthorized=True))
    assert (info.value.code, info.value.auth_failure) == ("ETLS", False)


# -- scripted stubs: behaviour pymap doesn't have ------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def stub_imap(script: Script) -> AsyncIterator[int]:
    """A one-off IMAP server on the test's loop, driven by ``script`` after the greeting."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR] stub ready\r\n")
        try:
            await script(reader, writer)
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def answer_capability(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Answer CAPABILITY (aioimaplib asks after the greeting); return the next command line."""
    tag = (await reader.readline()).split(b" ")[0]
    writer.write(b"* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR\r\n" + tag + b" OK done\r\n")
    return await reader.readline()


async def answer_logout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Expect LOGOUT next and answer it the way servers do (BYE, tagged OK)."""
    line = await reader.readline()
    assert b"LOGOUT" in line.upper(), line
    writer.write(b"* BYE logging out\r\n" + line.split(b" ")[0] + b" OK bye\r\n")
    await writer.drain()


async def test_xoauth2_rejected_token_fails_fast() -> None:
    """Servers answer a bad token with a '+' JSON challenge and wait for an empty line."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await answer_capability(reader, writer)
        assert b"AUTHENTICATE XOAUTH2" in line
        writer.write(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n")
        assert await reader.readline() == b"\r\n"
        writer.write(line.split(b" ")[0] + b" NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n")
        await answer_logout(reader, writer)

    async with stub_imap(script) as port:
        started = time.monotonic()
        with pytest.raises(MailError) as info:
            await verify_imap(
                ImapSettings(host="127.0.0.1", port=port, user="u@x", access_token="bad", timeout=5)
            )
    assert (info.value.code, info.value.auth_failure, info.value.permanent) == ("EAUTH", True, True)
    assert time.monotonic() - started < 2


async def test_xoauth2_accepted() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await answer_capability(reader, writer)
        writer.write(line.split(b" ")[0] + b" OK authenticated\r\n")
        await answer_logout(reader, writer)

    async with stub_imap(script) as port:
        await verify_imap(
            ImapSettings(host="127.0.0.1", port=port, user="u@x", access_token="good", timeout=5)
        )


async def test_temporarily_unavailable_login_is_transient() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await answer_capability(reader, writer)
        writer.write(line.split(b" ")[0] + b" NO [UNAVAILABLE] Backend down, try later\r\n")
        await answer_logout(reader, writer)

    async with stub_imap(script) as port:
        with pytest.raises(MailError) as info:
            await verify_imap(ImapSettings(host="127.0.0.1", port=port, user="u", password="p", timeout=5))
    assert (info.value.code, info.value.permanent, info.value.auth_failure) == ("EAUTH", False, False)


async def test_login_refused_then_hang_up_is_still_auth_failure() -> None:
    """Some servers close right after the tagged NO; that must not read as a connection error."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await answer_capability(reader, writer)
        writer.write(line.split(b" ")[0] + b" NO [AUTHENTICATIONFAILED] Invalid credentials\r\n")
        await writer.drain()

    async with stub_imap(script) as port:
        with pytest.raises(MailError) as info:
            await verify_imap(ImapSettings(host="127.0.0.1", port=port, user="u", password="p", timeout=5))
    assert (info.value.code, info.value.auth_failure) == ("EAUTH", True)


async def test_connection_dropped_mid_command_fails_fast() -> None:
    """aioimaplib leaves a command pending forever when the socket closes; we must not wait it out."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_capability(reader, writer)  # then hang up on LOGIN

    async with stub_imap(script) as port:
        started = time.monotonic()
        with pytest.raises(MailError) as info:
            await verify_imap(ImapSettings(host="127.0.0.1", port=port, user="u", password="p", timeout=10))
    assert info.value.code == "ECONNECTION"
    assert time.monotonic() - started < 2


# -- pure helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("Sent", "Sent"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("台北", "&U,BTFw-"),
        ("Gesendete Objekte/2024 ✓", "Gesendete Objekte/2024 &JxM-"),
    ],
)
def test_modified_utf7(name: str, wire: str) -> None:
    assert encode_mailbox(name) == wire
    assert decode_mailbox(wire) == name


def test_parse_list_reply() -> None:
    lines = [
        b'(\\HasNoChildren) "/" INBOX',
        b'(\\HasNoChildren \\Sent) "/" "Sent Items"',
        b'(\\HasNoChildren) "." {12}',
        b"Entw&APw-rfe",
        b'(\\Noselect \\HasChildren) NIL "[Gmail]"',
        b"LIST completed.",
    ]
    assert _parse_list(lines) == [
        ({"\\hasnochildren"}, "INBOX"),
        ({"\\hasnochildren", "\\sent"}, "Sent Items"),
        ({"\\hasnochildren"}, "Entwürfe"),
        ({"\\noselect", "\\haschildren"}, "[Gmail]"),
    ]
