"""The parts of one webhook POST that are plain values: its failure reason and its signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import httpx

from gql_mail.mail.peer_text import TRUNCATED
from gql_mail.workers.webhook_post import (
    MAX_REASON,
    ee_signature,
    queued_time,
    reason,
    signature,
    signature_v2,
)


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


def test_emailengine_signature_is_unpadded_base64url() -> None:
    # A digest whose base64 has '+', '/' and padding: base64url turns them into '-', '_' and drops the '='.
    body = b"x" * 7
    digest = hmac.new(b"k", body, hashlib.sha256).digest()
    assert ee_signature("k", body) == base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert len(ee_signature("k", body)) == 43 and "=" not in ee_signature("k", body)


def test_queued_time_rounds_like_javascript_and_is_never_negative() -> None:
    at = datetime(2026, 12, 3, tzinfo=UTC)
    assert queued_time(at, at) == "0s"
    assert queued_time(at, at + timedelta(seconds=4.5)) == "5s"
    assert queued_time(at, at + timedelta(seconds=4.49)) == "4s"
    assert queued_time(at, at - timedelta(seconds=3)) == "0s"  # another node's clock a little behind
