"""GraphQL's side of per-account pacing (services/pacing.py): the `limits` input, and the `limits`,
`usage` and `throttledUntil` fields of `Account`. Translation only; the rules live in the service."""

from __future__ import annotations

from datetime import datetime

import strawberry

from gql_mail.graphql.context import Info
from gql_mail.services import pacing


@strawberry.input(
    description="Sending limits of the account (all optional). None set: the provider's preset, chosen by "
    "the SMTP host. A message over a limit waits (its nextAttempt says until when) without using an attempt."
)
class LimitsInput:
    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None
    recipients_per_day: int | None = None
    max_connections: int | None = strawberry.field(
        default=None, description="SMTP connections this process opens for the account at once."
    )
    ramp_up: bool = strawberry.field(
        default=False,
        description="Warm-up for a new sender: a sixteenth of the limits (its own or the preset's) on the "
        "account's first day, doubling daily, the whole from the fifth day.",
    )

    def to_limits(self) -> pacing.Limits:
        return pacing.validated_limits(
            per_minute=self.per_minute,
            per_hour=self.per_hour,
            per_day=self.per_day,
            recipients_per_day=self.recipients_per_day,
            max_connections=self.max_connections,
            ramp_up=self.ramp_up,
        )


@strawberry.type(description="The limits in force: the account's own, or its provider's preset.")
class AccountLimits:
    per_minute: int | None
    per_hour: int | None
    per_day: int | None
    recipients_per_day: int | None
    max_connections: int | None
    ramp_up: bool = strawberry.field(description="Warming up: the figures shown are today's share.")
    preset: str | None = strawberry.field(
        description="The provider preset in force (e.g. gmail); null: the account's own."
    )


@strawberry.type(description="Messages sent in each sliding window ending now (counted across all nodes).")
class AccountUsage:
    last_minute: int
    last_hour: int
    today: int = strawberry.field(description="The last 24 hours.")
    recipients_today: int


async def status(info: Info, account_id: str) -> pacing.PacingStatus:
    return await pacing.pacing_status(info.context.runtime, account_id)


def limits_of(found: pacing.PacingStatus) -> AccountLimits:
    lim = found.limits
    return AccountLimits(
        per_minute=lim.per_minute,
        per_hour=lim.per_hour,
        per_day=lim.per_day,
        recipients_per_day=lim.recipients_per_day,
        max_connections=lim.max_connections,
        ramp_up=lim.ramp_up,
        preset=found.preset,
    )


def usage_of(found: pacing.PacingStatus) -> AccountUsage:
    u = found.usage
    return AccountUsage(
        last_minute=u.last_minute, last_hour=u.last_hour, today=u.today, recipients_today=u.recipients_today
    )


def throttled_until_of(found: pacing.PacingStatus) -> datetime | None:
    return found.throttled_until
