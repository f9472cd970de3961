"""pytest fixtures for the real peers; loaded by tests/conftest.py (``pytest_plugins``).

Servers are started once per session (pymap takes about a second) and put back to a known state
before every test by the function-scoped fixtures, so tests never see each other's scripting.

| fixture                    | scope    | gives                                                          |
| -------------------------- | -------- | -------------------------------------------------------------- |
| ``smtp_server``            | function | the session ``SmtpServer``, reset (scripts, records, password)  |
| ``smtp_server_session``    | session  | the same server without the reset                              |
| ``imap_server``            | session  | ``ImapServer`` (pymap; state shared: match by Message-ID)      |
| ``webhook_receiver``       | function | the session ``WebhookReceiver``, reset (up, 200, no records)   |
| ``webhook_receiver_session`` | session | the same receiver without the reset                           |
| ``closed_port``            | function | a 127.0.0.1 port nothing listens on                            |
| ``silent_port``            | function | a 127.0.0.1 port that accepts TCP and never answers            |
| ``self_signed_cert``       | session  | ``SelfSignedCert`` for localhost/127.0.0.1                     |
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.servers.imap import ImapServer
from tests.servers.smtp import SelfSignedCert, SmtpServer, silent_server
from tests.servers.smtp import closed_port as _closed_port
from tests.servers.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="session")
def smtp_server_session() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def smtp_server(smtp_server_session: SmtpServer) -> SmtpServer:
    smtp_server_session.reset()
    return smtp_server_session


@pytest.fixture(scope="session")
def imap_server() -> Iterator[ImapServer]:
    with ImapServer() as server:
        yield server


@pytest.fixture(scope="session")
def webhook_receiver_session() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def webhook_receiver(webhook_receiver_session: WebhookReceiver) -> WebhookReceiver:
    webhook_receiver_session.reset()
    return webhook_receiver_session


@pytest.fixture
def closed_port() -> int:
    return _closed_port()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    async with silent_server() as port:
        yield port


@pytest.fixture(scope="session")
def self_signed_cert(tmp_path_factory: pytest.TempPathFactory) -> SelfSignedCert:
    return SelfSignedCert.create(tmp_path_factory.mktemp("tls"))
