"""Fixtures of the fault suite, and the `fault` marker whose text becomes a row of docs/reliability.md.

Each test says what fault it injects and what it checks (`@pytest.mark.fault(...)`); figures it measures
(duplicates at a kill, messages per second under load) go through the `figures` fixture. All of it travels
on the test report's `user_properties`, which `tests/faults/report.py` turns into the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.servers.proxy import FaultProxy
from tests.servers.smtp import SmtpServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fault(name, checked): a fault-suite test and its row in docs/reliability.md"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("fault")
    if marker is not None:
        item.user_properties.append(("fault", marker.args[0]))
        item.user_properties.append(("checked", marker.args[1]))


class Figures:
    """Measured numbers a test reports (they appear in the Result column)."""

    def __init__(self, item: pytest.Item) -> None:
        self._item = item

    def __setitem__(self, name: str, value: Any) -> None:
        self._item.user_properties.append(("figure", (name, value)))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node)


@pytest.fixture
def smtp_proxy(smtp_server: SmtpServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the (reset) session SMTP server, passing traffic through."""
    with FaultProxy(smtp_server.host, smtp_server.port) as proxy:
        yield proxy
