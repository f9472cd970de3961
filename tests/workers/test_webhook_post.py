"""The parts of one webhook POST that are plain values: its failure reason and its signatures."""

from __future__ import annotations

import hashlib
import hmac

import httpx

from gql_mail.mail.peer_text import TRUNCATED
from gql_mail.workers.webhook_post import MAX_REASON, reason, signature, signature_v2


class PolicyRefused(httpx.ConnectError):
    """As the outbound policy words a refused target: an httpx error with a code."""

    code = "EPOLICY"


def test_a_reason_leads_with_the_error_code_else_its_type() -> None:
    assert reason(PolicyRefused("169.254.169.254 is denied")) == "EPOLICY: 169.254.169.254 is denied"
    assert reason(httpx.ConnectError("refused")) == "ConnectError: refused"
    assert reason(ZeroDivisionError()) == "ZeroDivisionError"


def test_a_reason_is_one_short_clean_line() -> None:
    text = reason(RuntimeError("SSH-2.0-OpenSSH\r\n\x00" + "x" * 5000))
    assert text.startswith("RuntimeError: SSH-2.0-OpenSSH x") and "\x00" not in text
    assert len(text) == MAX_REASON and text.endswith(TRUNCATED)


def test_signatures() -> None:
    body = b'{"event":"messageSent"}'
    assert signature("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert signature_v2("k", 1700000000, body) == "sha256=" + (
        hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    )
