"""TLS you can require: `smtp.tls.requireTLS` / `imap.tls.requireTLS` per account, `GQL_MAIL_REQUIRE_TLS` as
the default, and the rule that holds without either (gql_mail/mail/tls_policy.py).

The attacker is real: a proxy in front of a real server (aiosmtpd, pymap, both offering STARTTLS with a
self-signed certificate) that removes STARTTLS from what the server says, or answers the client's STARTTLS
with a refusal itself. The proxy records every byte the client sent through it, so "no credential was sent"
is checked on the wire, not inferred from the server's state.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from gql_mail.mail.errors import MailError
from gql_mail.mail.imap import ImapSettings, verify_imap
from gql_mail.mail.smtp import SmtpSettings, verify_smtp
from gql_mail.mail.tls_policy import is_loopback
from tests.conftest import ACCOUNT, REGISTER, account_input, imap_block, smtp_block
from tests.faults.helpers import message, of, simple, submit
from tests.harness import Server, run_server, subscribe
from tests.servers.imap import ImapServer
from tests.servers.smtp import SelfSignedCert, SmtpServer
from tests.servers.starttls_stripper import StarttlsStripper, strip_imap_line, strip_smtp_reply

STATE_EVENTS = ("accountConnected", "authenticationError", "connectError")


@pytest.fixture(scope="module")
def tls_smtp(self_signed_cert: SelfSignedCert) -> Iterator[SmtpServer]:
    """aiosmtpd offering STARTTLS (and AUTH with or without it, as many servers do)."""
    with SmtpServer(tls_context=self_signed_cert.server_context()) as server:
        yield server


@pytest.fixture(scope="module")
def tls_imap(self_signed_cert: SelfSignedCert) -> Iterator[ImapServer]:
    with ImapServer(cert=self_signed_cert) as server:
        yield server


@pytest.fixture
def smtp_attacker(tls_smtp: SmtpServer) -> Iterator[StarttlsStripper]:
    tls_smtp.reset()
    with StarttlsStripper(tls_smtp.host, tls_smtp.port, protocol="smtp") as proxy:
        yield proxy


@pytest.fixture
def imap_attacker(tls_imap: ImapServer) -> Iterator[StarttlsStripper]:
    with StarttlsStripper(tls_imap.host, tls_imap.port, protocol="imap") as proxy:
        yield proxy


@pytest.fixture
def remote_name() -> tuple[str, str]:
    """A host name of this machine that is not a loopback *name*, and the address it resolves to.

    A proxy listening there stands for a remote server: `is_loopback` judges the configured name."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if is_loopback(name):
        pytest.skip(f"this machine is called {name!r}")
    return name, address


def smtp_via(account: str, smtp: SmtpServer, proxy: StarttlsStripper, **tls: Any) -> dict[str, Any]:
    data = account_input(account, smtp)
    data["smtp"] = smtp_block(
        smtp, host=proxy.host, port=proxy.port, tls={"rejectUnauthorized": False, **tls}
    )
    return data


async def register(server: Server, data: dict[str, Any]) -> dict[str, Any]:
    """Register and wait for the check's verdict; the account as the API shows it then."""
    async with subscribe(server, account=data["account"]) as sub:
        await server.gql(REGISTER, {"input": data})
        await sub.wait_for(lambda e: e["event"] in STATE_EVENTS)
    account: dict[str, Any] = (await server.gql(ACCOUNT, {"account": data["account"]}))["account"]
    return account


def assert_no_credentials(proxy: StarttlsStripper, *secrets: str) -> None:
    sent = proxy.client_bytes
    assert sent, "the client never connected through the attacker"
    assert b"AUTH" not in sent.upper() and b"LOGIN" not in sent.upper(), sent
    for secret in secrets:
        assert secret.encode() not in sent


# -- the attacker itself -------------------------------------------------------------------------------


def test_stripping_rewrites_only_starttls() -> None:
    ehlo = [b"250-smtp.test\r\n", b"250-SIZE 100\r\n", b"250-STARTTLS\r\n", b"250 AUTH PLAIN\r\n"]
    assert strip_smtp_reply(ehlo) == [b"250-smtp.test\r\n", b"250-SIZE 100\r\n", b"250 AUTH PLAIN\r\n"]
    assert strip_smtp_reply([b"250-smtp.test\r\n", b"250 STARTTLS\r\n"]) == [b"250 smtp.test\r\n"]
    assert strip_imap_line(b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] hi\r\n") == (
        b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n"
    )
    assert strip_imap_line(b"* CAPABILITY IMAP4rev1 STARTTLS\r\n") == b"* CAPABILITY IMAP4rev1\r\n"


def test_loopback_is_judged_on_the_configured_name() -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1", "localhost", "LOCALHOST."):
        assert is_loopback(host), host
    # Names are never resolved: what DNS says may be the attacker's answer.
    for host in ("smtp.example.com", "localhost.example.com", "127.0.0.1.nip.io", "10.0.0.1", "::2", ""):
        assert not is_loopback(host), host


# -- SMTP, through a running gql-mail ------------------------------------------------------------------


@pytest.mark.fault(
    "TLS stripping (SMTP, requireTLS)",
    "a proxy removes STARTTLS from aiosmtpd's EHLO answer; with smtp.tls.requireTLS the account is "
    "CONNECT_ERROR with lastError ETLS and no AUTH byte crossed the proxy",
)
async def test_stripped_starttls_with_require_tls_sends_no_credentials(
    server: Server, tls_smtp: SmtpServer, smtp_attacker: StarttlsStripper
) -> None:
    account = await register(server, smtp_via("strict", tls_smtp, smtp_attacker, requireTLS=True))
    assert account["state"] == "CONNECT_ERROR"
    assert account["lastError"]["code"] == "ETLS"
    assert "STARTTLS" in account["lastError"]["message"]
    assert_no_credentials(smtp_attacker, tls_smtp.password)


async def test_require_tls_logs_in_over_starttls_when_nobody_interferes(
    server: Server, tls_smtp: SmtpServer, smtp_attacker: StarttlsStripper
) -> None:
    smtp_attacker.set_mode("pass")
    account = await register(server, smtp_via("strict-ok", tls_smtp, smtp_attacker, requireTLS=True))
    assert account["state"] == "CONNECTED"
    assert smtp_attacker.starttls_seen == 1
    assert tls_smtp.password.encode() not in smtp_attacker.client_bytes  # it went inside TLS


async def test_stripped_starttls_without_require_tls_logs_in_as_today(
    server: Server, tls_smtp: SmtpServer, smtp_attacker: StarttlsStripper
) -> None:
    """Opportunistic TLS, the default: a stripped STARTTLS is not noticed. This is the attack
    `requireTLS` exists for; the check shows the proxy really strips."""
    account = await register(server, smtp_via("lax", tls_smtp, smtp_attacker))
    assert account["state"] == "CONNECTED"
    assert smtp_attacker.starttls_seen == 0
    assert b"AUTH" in smtp_attacker.client_bytes


@pytest.mark.fault(
    "TLS stripping (SMTP, GQL_MAIL_REQUIRE_TLS)",
    "with the deployment default on, an account that says nothing is ETLS behind the stripping proxy with no "
    "AUTH sent; an account with requireTLS: false still connects in clear",
)
async def test_global_default_requires_tls_and_an_account_may_opt_out(
    tmp_path: Any, tls_smtp: SmtpServer, smtp_attacker: StarttlsStripper
) -> None:
    async with run_server(tmp_path, require_tls=True) as server:
        account = await register(server, smtp_via("default", tls_smtp, smtp_attacker))
        assert (account["state"], account["lastError"]["code"]) == ("CONNECT_ERROR", "ETLS")
        assert_no_credentials(smtp_attacker, tls_smtp.password)

        account = await register(server, smtp_via("opt-out", tls_smtp, smtp_attacker, requireTLS=False))
        assert account["state"] == "CONNECTED"
        assert b"AUTH" in smtp_attacker.client_bytes


@pytest.mark.fault(
    "TLS stripping during delivery (SMTP, requireTLS)",
    "an account CONNECTED over STARTTLS; the attacker starts stripping: messageDeliveryError ETLS, retried "
    "(not an authentication error), no AUTH and no message byte in clear; sent over TLS once it stops",
)
async def test_delivery_behind_a_stripper_fails_with_etls_and_is_retried(
    server: Server, tls_smtp: SmtpServer, smtp_attacker: StarttlsStripper
) -> None:
    smtp_attacker.set_mode("pass")
    account = await register(server, smtp_via("deliver", tls_smtp, smtp_attacker, requireTLS=True))
    assert account["state"] == "CONNECTED"
    smtp_attacker.set_mode("strip")
    smtp_attacker.clear()
    async with subscribe(server, account="deliver") as sub:
        answer = await submit(server, "deliver", simple())
        error = await sub.wait_for(of("messageDeliveryError", answer["queueId"]))
        assert error["data"]["errorCode"] == "ETLS", error
        assert error["data"]["job"]["nextAttempt"] is not None
        assert_no_credentials(smtp_attacker, tls_smtp.password)
        assert b"MAIL FROM" not in smtp_attacker.client_bytes.upper()
        shown = (await server.gql(ACCOUNT, {"account": "deliver"}))["account"]
        assert shown["state"] != "AUTHENTICATION_ERROR"

        smtp_attacker.set_mode("pass")
        server.advance(3600)
        await sub.wait_for(of("messageSent", answer["queueId"]))
    (received,) = await tls_smtp.wait_for_messages(1)
    assert received.tls
    assert (await message(server, answer["queueId"]))["attemptsMade"] == 2


@pytest.mark.fault(
    "STARTTLS refused by a remote host (SMTP, no requireTLS)",
    "the attacker answers STARTTLS with 454 for a server reached by a non-loopback name: ETLS and no AUTH "
    "sent, even without requireTLS",
)
async def test_refused_starttls_to_a_remote_host_sends_no_credentials(
    server: Server, tls_smtp: SmtpServer, remote_name: tuple[str, str]
) -> None:
    name, address = remote_name
    with StarttlsStripper(
        tls_smtp.host, tls_smtp.port, protocol="smtp", mode="refuse", host=address
    ) as proxy:
        data = smtp_via("remote", tls_smtp, proxy)
        data["smtp"]["host"] = name
        account = await register(server, data)
        assert (account["state"], account["lastError"]["code"]) == ("CONNECT_ERROR", "ETLS")
        assert "454" in account["lastError"]["message"]
        assert proxy.starttls_seen == 1
        assert_no_credentials(proxy, tls_smtp.password)


async def test_refused_starttls_on_loopback_logs_in_in_clear(
    server: Server, tls_smtp: SmtpServer, smtp_attacker: StarttlsStripper
) -> None:
    """Bytes to 127.0.0.1 never leave the machine: a local relay that offers STARTTLS and then refuses it
    still works without requireTLS, and is ETLS with it."""
    smtp_attacker.set_mode("refuse")
    account = await register(server, smtp_via("local", tls_smtp, smtp_attacker))
    assert account["state"] == "CONNECTED"
    assert smtp_attacker.starttls_seen == 1

    smtp_attacker.clear()
    account = await register(server, smtp_via("local-strict", tls_smtp, smtp_attacker, requireTLS=True))
    assert (account["state"], account["lastError"]["code"]) == ("CONNECT_ERROR", "ETLS")
    assert_no_credentials(smtp_attacker, tls_smtp.password)


# -- IMAP ----------------------------------------------------------------------------------------------


def imap_settings(imap: ImapServer, proxy: StarttlsStripper, **overrides: Any) -> ImapSettings:
    values: dict[str, Any] = {
        "host": proxy.host,
        "port": proxy.port,
        "user": imap.user,
        "password": imap.password,
        "reject_unauthorized": False,
        "timeout": 5.0,
    }
    values.update(overrides)
    return ImapSettings(**values)


@pytest.mark.fault(
    "TLS stripping (IMAP, requireTLS)",
    "a proxy removes STARTTLS from pymap's capabilities; with imap.tls.requireTLS the account is "
    "CONNECT_ERROR with lastError ETLS and no LOGIN byte crossed the proxy",
)
async def test_imap_stripped_starttls_with_require_tls(
    server: Server, smtp_server: SmtpServer, tls_imap: ImapServer, imap_attacker: StarttlsStripper
) -> None:
    data = account_input("imap-strict", smtp_server, tls_imap)
    data["imap"] = imap_block(
        tls_imap,
        host=imap_attacker.host,
        port=imap_attacker.port,
        tls={"rejectUnauthorized": False, "requireTLS": True},
    )
    account = await register(server, data)
    assert (account["state"], account["lastError"]["code"]) == ("CONNECT_ERROR", "ETLS")
    assert_no_credentials(imap_attacker, tls_imap.password)


async def test_imap_require_tls_logs_in_over_starttls(
    tls_imap: ImapServer, imap_attacker: StarttlsStripper
) -> None:
    imap_attacker.set_mode("pass")
    await verify_imap(imap_settings(tls_imap, imap_attacker, require_tls=True))
    assert imap_attacker.starttls_seen == 1
    assert tls_imap.password.encode() not in imap_attacker.client_bytes


async def test_imap_stripped_starttls_without_require_tls_logs_in_as_today(
    tls_imap: ImapServer, imap_attacker: StarttlsStripper
) -> None:
    await verify_imap(imap_settings(tls_imap, imap_attacker))
    assert b"LOGIN" in imap_attacker.client_bytes


@pytest.mark.fault(
    "STARTTLS refused by a remote host (IMAP, no requireTLS)",
    "the attacker answers STARTTLS with NO for a server reached by a non-loopback name: ETLS, no LOGIN "
    "sent; on loopback the login goes on in clear",
)
async def test_imap_refused_starttls(
    tls_imap: ImapServer, imap_attacker: StarttlsStripper, remote_name: tuple[str, str]
) -> None:
    name, address = remote_name
    with StarttlsStripper(
        tls_imap.host, tls_imap.port, protocol="imap", mode="refuse", host=address
    ) as proxy:
        with pytest.raises(MailError) as info:
            await verify_imap(imap_settings(tls_imap, proxy, host=name))
        assert (info.value.code, info.value.auth_failure) == ("ETLS", False)
        assert proxy.starttls_seen == 1
        assert_no_credentials(proxy, tls_imap.password)

    imap_attacker.set_mode("refuse")
    await verify_imap(imap_settings(tls_imap, imap_attacker))  # loopback: in clear
    assert b"LOGIN" in imap_attacker.client_bytes


async def test_smtp_refused_starttls_to_a_remote_host_at_the_mail_layer(
    tls_smtp: SmtpServer, remote_name: tuple[str, str]
) -> None:
    name, address = remote_name
    with StarttlsStripper(
        tls_smtp.host, tls_smtp.port, protocol="smtp", mode="refuse", host=address
    ) as proxy:
        settings = SmtpSettings(
            host=name, port=proxy.port, user=tls_smtp.user, password=tls_smtp.password, timeout=5.0
        )
        with pytest.raises(MailError) as info:
            await verify_smtp(settings)
        assert (info.value.code, info.value.permanent, info.value.auth_failure) == ("ETLS", False, False)
        assert_no_credentials(proxy, tls_smtp.password)
