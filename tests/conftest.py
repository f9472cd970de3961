"""Shared fixtures. Real peers (SMTP, IMAP, webhook receiver) live in tests/servers/."""
from __future__ import annotations

pytest_plugins = ["tests.servers.fixtures"]
