"""`derive_events`: a message's events rebuilt from its attempts and state (there is no per-message event
log), for each way a message's story can go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gql_mail.models import OutboxMessage
from gql_mail.services.history import Attempt, derive_events

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def attempt(n: int, minutes: int, ok: bool) -> Attempt:
    return Attempt(
        queue_id="q",
        attempt=n,
        attempted_at=T0 + timedelta(minutes=minutes),
        duration_ms=12,
        ok=ok,
        error=None if ok else "refused",
        error_code=None if ok else "EMESSAGE",
        smtp_code=250 if ok else 451,
        response=None,
    )


def message(status: str, copy_status: str | None = None, copy_error: str | None = None) -> OutboxMessage:
    return OutboxMessage(
        id="q",
        account_id="a",
        message_id="<m@x>",
        raw=b"",
        envelope_from="a@x",
        envelope_to=["b@x"],
        status=status,
        copy_status=copy_status,
        copy_error=copy_error,
        next_attempt_at=T0,
        created_at=T0,
        updated_at=T0 + timedelta(hours=1),
    )


def names(status: str, attempts: list[Attempt], **copy: str) -> list[tuple[str, int]]:
    return [
        (e.event, int((e.date - T0).total_seconds() // 60))
        for e in derive_events(message(status, **copy), attempts)
    ]


def test_retried_then_sent() -> None:
    assert names("sent", [attempt(1, 0, False), attempt(2, 5, False), attempt(3, 15, True)]) == [
        ("messageDeliveryError", 0),
        ("messageDeliveryError", 5),
        ("messageSent", 15),
    ]


def test_failed_then_retried_by_hand_then_sent() -> None:
    assert names("sent", [attempt(1, 0, False), attempt(2, 5, False), attempt(1, 30, True)]) == [
        ("messageDeliveryError", 0),
        ("messageDeliveryError", 5),
        ("messageFailed", 5),
        ("messageSent", 30),
    ]


def test_failed_for_good_and_failed_without_an_attempt() -> None:
    assert names("failed", [attempt(1, 0, False)]) == [("messageDeliveryError", 0), ("messageFailed", 0)]
    assert names("failed", []) == [("messageFailed", 60)], "stalled too often: dated at its last change"


def test_a_sent_copy_given_up() -> None:
    assert names("sent", [attempt(1, 0, True)], copy_status="failed", copy_error="no folder") == [
        ("messageSent", 0),
        ("messageCopyError", 60),
    ]
    assert names("queued", []) == []
