"""Control characters and host names: one rule each, and every call site follows it.

Before, the services refused TAB but let lone surrogates through while compose did the opposite, and
account hosts refused underscores and accepted `xn--zz` while webhook URLs did the opposite. The rules
that won are described in gql_mail/control_chars.py and services/validation.py's `host_fault`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gql_mail.mail.compose import Address, ComposeError, Draft, compose
from gql_mail.services.errors import BadInput
from gql_mail.services.validation import hostname, no_control_chars
from gql_mail.services.webhooks import WebhookSpec, create_webhook
from tests.conftest import REGISTER, account_input
from tests.harness import GraphQLErrors, Server
from tests.servers.smtp import SmtpServer

TEXTS = [
    ("plain", None),
    ("a\tb", None),  # TAB: header text may hold it
    ("caf\u00e9 \u0085 \u2028", None),  # C1 and U+2028: encoded-words carry them
    ("a\r\nBcc: x@y.z", "line break"),
    ("a\nb", "line break"),
    ("esc\x1b[31m", "control characters"),
    ("nul\x00", "control characters"),
    ("del\x7f", "control characters"),
    ("a\ud800", "lone surrogate"),
]


def _subject_fault(text: str) -> str | None:
    draft = Draft(from_=Address("s@example.com"), to=(Address("t@example.com"),), subject=text)
    try:
        compose(draft, now=datetime(2026, 1, 1, tzinfo=UTC))
    except ComposeError as exc:
        return str(exc)
    return None


def _field_fault(text: str) -> str | None:
    try:
        no_control_chars(text, "name")
    except BadInput as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(("text", "fault"), TEXTS, ids=[repr(t) for t, _ in TEXTS])
def test_a_subject_and_a_stored_field_follow_one_control_character_rule(text: str, fault: str | None) -> None:
    subject, field = _subject_fault(text), _field_fault(text)
    if fault is None:
        assert subject is None and field is None
    else:
        assert subject is not None and fault in subject
        assert field is not None and fault in field


HOSTS = [
    ("mail.example.com", True),
    ("mail.example.com.", True),  # one trailing dot: the root
    ("smtp_relay", True),  # underscore: docker compose service names, EmailEngine accepts them
    ("b\u00fccher.example", True),
    ("xn--bcher-kva.example", True),
    ("127.0.0.1", True),
    ("[::1]", True),
    ("xn--zz", False),  # not valid IDNA: ssl and httpx raise UnicodeError at connect time
    ("mail.example.com..", False),
    ("a..b", False),
    ("-mail.example", False),
    ("a" * 64 + ".example", False),
    (".".join(["a" * 63] * 4), False),  # 255 octets
    ("bad host!", False),
]


async def _webhook_accepts(server: Server, host: str) -> bool:
    try:
        await create_webhook(server.runtime, WebhookSpec(url=f"http://{host}:9/hook"))
    except BadInput as exc:
        assert exc.field == "url"
        return False
    return True


def _account_accepts(host: str) -> bool:
    try:
        hostname(host, "smtp.host")
    except BadInput as exc:
        assert exc.field == "smtp.host"
        return False
    return True


async def test_account_hosts_and_webhook_hosts_follow_one_rule(server: Server) -> None:
    verdicts: dict[str, Any] = {
        host: (_account_accepts(host), await _webhook_accepts(server, host)) for host, _ in HOSTS
    }
    assert verdicts == {host: (ok, ok) for host, ok in HOSTS}


def test_an_account_host_is_stored_without_brackets_or_its_trailing_dot() -> None:
    assert hostname("[::1]", "smtp.host") == "::1"
    assert hostname(" mail.example.com. ", "smtp.host") == "mail.example.com"


async def test_an_invalid_idna_smtp_host_is_refused_through_the_api(
    server: Server, smtp_server: SmtpServer
) -> None:
    data = account_input("idna", smtp_server)
    data["smtp"]["host"] = "xn--zz"
    with pytest.raises(GraphQLErrors) as refused:
        await server.gql(REGISTER, {"input": data})
    assert refused.value.codes == ["BAD_USER_INPUT"]
    assert refused.value.errors[0]["extensions"]["field"] == "smtp.host"
