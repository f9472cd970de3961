"""An aiosmtpd server that behaves like a provider enforcing sending limits, on the test's clock.

It records when (by the injectable clock, so windows are test-controlled) each message arrived, and answers
like Gmail does: ``421 4.7.0 Try again later`` once `per_minute` messages arrived in the last minute, and
``550 5.4.5 Daily user sending quota exceeded`` once `daily` messages arrived in the last day.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from gql_mail.clock import Clock
from tests.servers.smtp import SmtpServer

RATE_REPLY = "421 4.7.0 Try again later, closing connection."
DAILY_REPLY = "550 5.4.5 Daily user sending quota exceeded. https://support.google.com/mail/?p=ReachedLimit"


class RateLimitedSmtpServer(SmtpServer):
    def __init__(
        self, clock: Clock, *, per_minute: int | None = None, daily: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self.per_minute = per_minute
        self.daily = daily
        self.arrivals: list[datetime] = []
        self.refusals: list[str] = []
        self._limits_lock = threading.Lock()

    def __enter__(self) -> RateLimitedSmtpServer:
        self.start()
        return self

    def _refusal(self, now: datetime) -> str | None:
        in_minute = sum(1 for at in self.arrivals if at > now - timedelta(minutes=1))
        in_day = sum(1 for at in self.arrivals if at > now - timedelta(days=1))
        if self.daily is not None and in_day >= self.daily:
            return DAILY_REPLY
        if self.per_minute is not None and in_minute >= self.per_minute:
            return RATE_REPLY
        return None

    async def _on_data(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = self.clock.now()
        with self._limits_lock:
            refusal = self._refusal(now)
            if refusal is not None:
                self.refusals.append(refusal)
                return refusal
        reply = await super()._on_data(server, session, envelope)
        if reply.startswith("250"):
            with self._limits_lock:
                self.arrivals.append(now)
        return reply

    def most_in_any(self, span: timedelta) -> int:
        """The most arrivals within any window of `span` (each window ending at an arrival)."""
        with self._limits_lock:
            times = sorted(self.arrivals)
        return max((sum(1 for t in times if end - span < t <= end) for end in times), default=0)
