from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from gql_mail.retry import RetryPolicy


def test_exponential_capped_jittered() -> None:
    policy = RetryPolicy(base_seconds=5, max_seconds=60)
    rng = random.Random(1)
    for attempt, exact in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (9, 60)]:
        delay = policy.delay(attempt, rng)
        assert exact * 0.75 <= delay <= exact


def test_gives_up_after_the_last_attempt() -> None:
    policy = RetryPolicy(base_seconds=5, max_seconds=60)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rng = random.Random(1)
    nxt = policy.next_attempt(attempts_made=2, attempts=3, now=now, rng=rng)
    assert nxt is not None and now + timedelta(seconds=7.5) <= nxt <= now + timedelta(seconds=10)
    assert policy.next_attempt(attempts_made=3, attempts=3, now=now, rng=rng) is None
