"""Secrets never in logs, at any level, from our code or from a library's (gql_mail/log_redaction.py).

A running gql-mail, with every logger of the process at DEBUG, goes through password logins and XOAUTH2
against real servers: aiosmtpd (which accepts a password with ``"``, ``\\`` and ``'`` and an XOAUTH2 token),
pymap (LOGIN and the copy to Sent), and a real IMAP server that refuses (so aioimaplib sends, and logs,
``LOGIN`` with such a password and ``AUTHENTICATE XOAUTH2`` with a token). Then the whole captured log text,
tracebacks included, is searched for each secret in every form it takes on the wire or in a ``repr``; the
forms are computed here, independently of the code under test.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from gql_mail.config import Settings
from gql_mail.log_redaction import REDACTED, credentials_in_use, install
from tests.conftest import ACCOUNT, REGISTER, account_input, imap_block, register_connected, smtp_block
from tests.faults.helpers import HOOK, of, simple, submit
from tests.harness import Server, run_server, subscribe
from tests.servers.imap import ImapServer
from tests.servers.imap_refusing import RefusingImapServer
from tests.servers.oauth2_token_server import TokenServer
from tests.servers.smtp import SmtpServer
from tests.servers.webhook_receiver import WebhookReceiver

USER = "sender@example.com"
CREATE_OAUTH2_APP = "mutation App($input: OAuth2AppInput!) { createOAuth2App(input: $input) { id } }"


def secret(kind: str) -> str:
    """A distinctive secret with the characters that IMAP quoting and Python escaping change."""
    return f"{kind}-q\"uo\\te'd-{uuid.uuid4().hex}"


def forms(value: str, user: str = USER) -> set[str]:
    """How ``value`` may appear in a log: raw, IMAP-quoted, escaped in a str or bytes repr, base64, and
    inside the SASL strings (PLAIN, XOAUTH2) that carry it."""
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    found = set()
    for text in (value, quoted):
        found.add(text)
        found.add(repr(text)[1:-1])
        found.add(repr(text.encode())[2:-1])
        found.add(text.replace("'", "\\'"))
        found.add(base64.b64encode(text.encode()).decode())
    for sasl in (f"\0{user}\0{value}", f"user={user}\x01auth=Bearer {value}\x01\x01"):
        found.add(base64.b64encode(sasl.encode()).decode())
    return found


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of every logger at DEBUG and above."""
    caplog.set_level(logging.DEBUG)
    for name in ("aioimaplib", "aiosmtplib", "mail.log", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """All captured records as a handler would write them: message, traceback, stack."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


def assert_absent(text: str, **secrets: str) -> None:
    for what, value in secrets.items():
        for form in forms(value):
            assert form not in text, f"{what} ({form!r}) is in the log"


@pytest.fixture
def refusing_imap() -> Iterator[RefusingImapServer]:
    with RefusingImapServer() as server:
        yield server


async def register_refused(server: Server, data: dict[str, object]) -> None:
    async with subscribe(server, account=str(data["account"])) as sub:
        await server.gql(REGISTER, {"input": data})
        event = await sub.wait_for(lambda e: e["event"] in ("accountConnected", "authenticationError"))
    assert event["event"] == "authenticationError", event


@pytest.mark.fault(
    "Secrets in debug logs",
    "every logger at DEBUG through password logins (with \" \\ ') and XOAUTH2 over SMTP and IMAP, sends, a "
    "copy to Sent and a signed webhook: no password, token, webhook secret or GQL_MAIL_SECRET in any form "
    "(raw, quoted, escaped, base64, SASL) in the captured log; aioimaplib's LOGIN/AUTHENTICATE lines are "
    "there, redacted",
)
async def test_no_secret_in_a_debug_log_of_a_full_flow(
    tmp_path: Path,
    debug_log: pytest.LogCaptureFixture,
    smtp_server: SmtpServer,
    imap_server: ImapServer,
    refusing_imap: RefusingImapServer,
    webhook_receiver: WebhookReceiver,
) -> None:
    smtp_password, smtp_token = secret("smtp-pass"), secret("smtp-token")
    imap_password, imap_token = secret("imap-pass"), secret("imap-token")
    hook_secret, app_secret = secret("hook"), secret("app")
    smtp_server.set_credentials(USER, smtp_password)
    smtp_server.set_access_token(smtp_token)

    async with run_server(tmp_path, secret=app_secret) as server:
        await server.gql(HOOK, {"input": {"url": webhook_receiver.url, "secret": hook_secret}})

        # A password login (SMTP) and LOGIN at pymap, a message sent and copied to Sent.
        data = account_input("pw", smtp_server, imap_server)
        data["smtp"] = smtp_block(smtp_server, auth={"user": USER, "pass": smtp_password})
        await register_connected(server, data)
        # XOAUTH2 over SMTP.
        data = account_input("xo", smtp_server)
        data["smtp"] = smtp_block(smtp_server, auth={"user": USER, "accessToken": smtp_token})
        await register_connected(server, data)
        for account in ("pw", "xo"):
            async with subscribe(server, account=account) as sub:
                answer = await submit(server, account, simple())
                await sub.wait_for(of("messageSent", answer["queueId"]))
        await webhook_receiver.wait_for(1)

        # aioimaplib's own debug lines: LOGIN with a quoted password, AUTHENTICATE XOAUTH2 with a token.
        data = account_input("imap-pw", smtp_server)
        data["imap"] = imap_block(
            imap_server,
            host=refusing_imap.host,
            port=refusing_imap.port,
            auth={"user": USER, "pass": imap_password},
        )
        await register_refused(server, data)
        data = account_input("imap-xo", smtp_server)
        data["imap"] = imap_block(
            imap_server,
            host=refusing_imap.host,
            port=refusing_imap.port,
            auth={"user": USER, "accessToken": imap_token},
        )
        await register_refused(server, data)
        shown = (await server.gql(ACCOUNT, {"account": "imap-xo"}))["account"]
        assert shown["state"] == "AUTHENTICATION_ERROR"

    text = log_text(debug_log)
    # The flow really went through the library lines that leaked before.
    imap_lines = [r.getMessage() for r in debug_log.records if r.name.startswith("aioimaplib")]
    assert any(f"LOGIN {REDACTED}" in line for line in imap_lines), imap_lines
    assert any(f"AUTHENTICATE XOAUTH2 {REDACTED}" in line for line in imap_lines), imap_lines
    assert_absent(
        text,
        smtp_password=smtp_password,
        smtp_token=smtp_token,
        imap_password=imap_password,
        imap_token=imap_token,
        webhook_secret=hook_secret,
        gql_mail_secret=app_secret,
    )


@pytest.mark.fault(
    "OAuth2 secrets in debug logs",
    "every logger at DEBUG through an OAuth2 app's creation, XOAUTH2 logins over SMTP and IMAP (refused, "
    "then refreshed once), a refresh before a send, a rotated refresh token and an invalid_grant: no "
    "access token, refresh token or client secret in any form in the captured log",
)
async def test_no_oauth2_token_or_client_secret_in_a_debug_log(
    tmp_path: Path,
    debug_log: pytest.LogCaptureFixture,
    smtp_server: SmtpServer,
    refusing_imap: RefusingImapServer,
) -> None:
    smtp_server.set_credentials(USER, secret("unused"))
    client_secret = secret("client-secret")
    with TokenServer(client_secret=client_secret, on_issue=smtp_server.set_access_token) as tokens:
        async with run_server(tmp_path) as server:
            app = (
                await server.gql(
                    CREATE_OAUTH2_APP,
                    {
                        "input": {
                            "name": "Gmail",
                            "provider": "gmail",
                            "clientId": tokens.client_id,
                            "clientSecret": client_secret,
                            "tokenUrl": tokens.url,
                        }
                    },
                )
            )["createOAuth2App"]["id"]

            def oauth2(expires_in: float) -> dict[str, object]:
                access, refresh = tokens.grant()
                expires = server.clock.now() + timedelta(seconds=expires_in)
                return {
                    "provider": app,
                    "auth": {"user": USER},
                    "accessToken": access,
                    "refreshToken": refresh,
                    "expires": expires.isoformat(),
                }

            smtp = {"host": smtp_server.host, "port": smtp_server.port, "secure": False}
            base = {"name": "OAuth2", "email": USER, "smtp": smtp}
            await register_connected(server, {**base, "account": "oa", "oauth2": oauth2(3600)})
            server.advance(3600)  # expired: refreshed before the send, the refresh token rotated
            async with subscribe(server, account="oa") as sub:
                answer = await submit(server, "oa", simple())
                await sub.wait_for(of("messageSent", answer["queueId"]))
            await server.drain()  # and its logged-in connection closed: the next send logs in again
            # IMAP refuses every token: AUTHENTICATE XOAUTH2, a refresh, AUTHENTICATE again, refused.
            imap = {"host": refusing_imap.host, "port": refusing_imap.port, "secure": False}
            await register_refused(server, {**base, "account": "oi", "imap": imap, "oauth2": oauth2(3600)})
            # Consent revoked: invalid_grant.
            tokens.revoke_all()
            server.advance(3600)
            async with subscribe(server, account="oa") as sub:
                await submit(server, "oa", simple())
                await server.drain()
                await sub.wait_for(lambda e: e["event"] == "authenticationError")
        assert tokens.calls == 3, tokens.requests

    text = log_text(debug_log)
    imap_lines = [r.getMessage() for r in debug_log.records if r.name.startswith("aioimaplib")]
    assert any(f"AUTHENTICATE XOAUTH2 {REDACTED}" in line for line in imap_lines), imap_lines
    assert "invalid_grant" in text  # the refusal is logged, its tokens are not
    issued = {f"token{i}": value for i, value in enumerate(tokens.issued)}
    assert len(issued) == 8
    assert_absent(text, client_secret=client_secret, **issued)


async def test_a_url_password_in_a_library_log_line_is_redacted(
    debug_log: pytest.LogCaptureFixture, webhook_receiver: WebhookReceiver
) -> None:
    """httpx logs every request's URL at INFO, a password in it included."""
    install()
    password = f"url-pass-{uuid.uuid4().hex}"
    url = webhook_receiver.url.replace("http://", f"http://hook:{password}@")
    async with httpx.AsyncClient() as client:
        await client.post(url, content=b"{}")
    assert any(r.name == "httpx" for r in debug_log.records)
    assert password not in log_text(debug_log)


def test_records_of_loggers_made_later_and_tracebacks_are_redacted(
    debug_log: pytest.LogCaptureFixture,
) -> None:
    install()
    later = logging.getLogger(f"gql_mail.tests.{uuid.uuid4().hex}")  # a child logger created after install()
    try:
        raise RuntimeError('a library\'s error text: a1 LOGIN user "p4ss\\"word"')
    except RuntimeError:
        later.exception("failed: %s", "AUTH PLAIN AHVzZXIAcDRzcw==")
    text = log_text(debug_log)
    assert "AHVzZXIAcDRzcw==" not in text
    assert "p4ss" not in text
    assert f"failed: AUTH PLAIN {REDACTED}" in text
    assert f"RuntimeError: a library's error text: a1 LOGIN {REDACTED}" in text


def test_gql_mail_secret_is_not_in_the_settings_repr(tmp_path: Path) -> None:
    value = secret("app")
    settings = Settings(secret=value, data_dir=tmp_path)
    assert settings.secret_value() == value
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert value not in shown


def test_registered_credentials_are_redacted_in_any_form_while_in_use(
    debug_log: pytest.LogCaptureFixture,
) -> None:
    """The values a client registers are redacted even where no command shape shows them: a bare base64
    line (SMTP AUTH LOGIN's answers), a ``repr`` of bytes, an exception's text. Logged through aioimaplib's
    logger in its own format ('Sending : %s' % bytes)."""
    install()
    password, token = secret("pass"), secret("token")
    library = logging.getLogger("aioimaplib.aioimaplib")
    with credentials_in_use(USER, password, token):
        # str(bytes) is what aioimaplib's '%s' % data gives.
        library.debug("Sending : " + repr(base64.b64encode(password.encode()) + b"\r\n"))
        library.debug("Sending : " + repr(f"answer {password}\r\n".encode()))
        library.debug("state: %r", {"token": token})
        try:
            raise ValueError(f"bad {password}")
        except ValueError:
            library.exception("failed")
    text = log_text(debug_log)
    assert text.count(REDACTED) == 4, text
    assert_absent(text, password=password, token=token)
    # Registered only while in use: the registry does not grow with every account the process has seen.
    library.debug("after: %s", password)
    assert password in debug_log.records[-1].getMessage()
