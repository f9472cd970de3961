"""EmailEngine's global webhook settings (`webhooks`, `webhooksEnabled`, `webhookEvents`) on gql-mail's
webhooks: the settings are kept in `service_setting`, and one webhook row, `SETTINGS_WEBHOOK_ID`, is what
they describe, so it is delivered by the same staging and worker as every other webhook.

The row has no secret of its own: its POSTs are signed with the service secret (services/settings.py),
which is EmailEngine's `serviceSecret`. It exists while `webhooks` holds a URL, and is enabled only while
`webhooksEnabled` is true and `webhookEvents` names an event: EmailEngine sends nothing for an empty
(or unset) `webhookEvents`, where a gql-mail webhook with no events would get every one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from gql_mail.models import ServiceSetting, Webhook
from gql_mail.runtime import Runtime
from gql_mail.services import validation as v
from gql_mail.services.webhooks import check_url

SETTINGS_WEBHOOK_ID = "settings"
URL = "webhooks"
ENABLED = "webhooksEnabled"
EVENTS = "webhookEvents"


@dataclass(frozen=True)
class WebhookSettings:
    url: str | None = None
    enabled: bool = False
    events: tuple[str, ...] = ()


def _settings(stored: dict[str, ServiceSetting | None]) -> WebhookSettings:
    values: dict[str, Any] = {key: row.value for key, row in stored.items() if row is not None}
    return WebhookSettings(
        url=values.get(URL) or None,
        enabled=bool(values.get(ENABLED, False)),
        events=tuple(values.get(EVENTS) or ()),
    )


async def _stored(session: Any) -> dict[str, ServiceSetting | None]:
    return {key: await session.get(ServiceSetting, key) for key in (URL, ENABLED, EVENTS)}


async def get_webhook_settings(rt: Runtime) -> WebhookSettings:
    async with rt.db.read() as session:
        return _settings(await _stored(session))


def _checked(rt: Runtime, changes: dict[str, Any]) -> dict[str, Any]:
    """The changes with their values checked (BadInput naming the setting); None clears `webhooks`."""
    checked: dict[str, Any] = {}
    if URL in changes:
        url = changes[URL]
        checked[URL] = check_url(url, rt.outbound, URL) if url else None
    if ENABLED in changes:
        checked[ENABLED] = bool(changes[ENABLED])
    if EVENTS in changes:
        events: Sequence[str] = changes[EVENTS] or ()
        checked[EVENTS] = v.event_names(events, wildcard=True, field=EVENTS) if events else []
    return checked


async def update_webhook_settings(rt: Runtime, changes: dict[str, Any]) -> WebhookSettings:
    """Apply `changes` (any of `webhooks`, `webhooksEnabled`, `webhookEvents`) in one write transaction,
    read included: the settings and the settings webhook change together, or nothing does, and two
    updates at once do not lose one another's keys."""
    checked = _checked(rt, changes)
    now = rt.clock.now()
    async with rt.db.write() as session:
        stored = await _stored(session)
        current = _settings(stored)
        after = replace(
            current,
            url=checked.get(URL, current.url),
            enabled=checked.get(ENABLED, current.enabled),
            events=tuple(checked.get(EVENTS, current.events)),
        )
        for key, value in checked.items():
            row = stored[key]
            if row is None:
                session.add(ServiceSetting(key=key, value=value, updated_at=now))
            else:
                row.value = value
                row.updated_at = now
        hook = await session.get(Webhook, SETTINGS_WEBHOOK_ID)
        if after.url is None:
            if hook is not None:
                await session.delete(hook)
        else:
            if hook is None:
                hook = Webhook(id=SETTINGS_WEBHOOK_ID, url=after.url, events=[], created_at=now)
                session.add(hook)
            hook.url = after.url
            hook.events = list(after.events)
            hook.enabled = after.enabled and bool(after.events)
    return after
