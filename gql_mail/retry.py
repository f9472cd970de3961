"""Retry policy as a value: when to try again, or `None` to give up.

Backoff is exponential from a base (attempt n waits base * 2^(n-1)), capped, with jitter drawn from an
injected random source so many failing messages do not retry in lockstep and tests stay deterministic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float
    max_seconds: float
    jitter: float = 0.25  # the delay is drawn from [d * (1 - jitter), d]

    def delay(self, attempts_made: int, rng: random.Random) -> float:
        exact = min(self.max_seconds, self.base_seconds * 2.0 ** max(0, attempts_made - 1))
        return exact * (1 - self.jitter * rng.random())

    def next_attempt(
        self, *, attempts_made: int, attempts: int, now: datetime, rng: random.Random
    ) -> datetime | None:
        """When to try again after `attempts_made` failed attempts of `attempts`; None: give up."""
        if attempts_made >= attempts:
            return None
        return now + timedelta(seconds=self.delay(attempts_made, rng))
