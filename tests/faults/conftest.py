"""Fixtures of the fault suite (the `fault` marker and `figures` live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.proxy import FaultProxy
from tests.servers.smtp import SmtpServer


@pytest.fixture
def smtp_proxy(smtp_server: SmtpServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the (reset) session SMTP server, passing traffic through."""
    with FaultProxy(smtp_server.host, smtp_server.port) as proxy:
        yield proxy
