"""The settings handlers: EmailEngine's `GET`/`POST /v1/settings` for the settings gql-mail keeps, the
global webhook (services/webhook_settings.py) and the service secret (services/settings.py)."""

from __future__ import annotations

from typing import Any

from gql_mail.events import ALL_EVENTS
from gql_mail.rest import answers
from gql_mail.rest.endpoint import Call
from gql_mail.rest.models import NoQuery, SettingsQuery, UpdateSettings
from gql_mail.services import settings, webhook_settings
from gql_mail.services.errors import BadInput


async def get_settings(call: Call[None, SettingsQuery]) -> answers.Settings:
    """The settings asked for (`?webhooks=true&...`), as EmailEngine answers them: the service secret,
    stored encrypted, as `true`; `eventTypes` lists the event names."""
    query = call.query
    answer: dict[str, Any] = {}
    if query.webhooks or query.webhooks_enabled or query.webhook_events:
        current = await webhook_settings.get_webhook_settings(call.runtime)
        if query.webhooks:
            answer[webhook_settings.URL] = current.url
        if query.webhooks_enabled:
            answer[webhook_settings.ENABLED] = current.enabled
        if query.webhook_events:
            answer[webhook_settings.EVENTS] = list(current.events)
    if query.service_secret:
        await settings.service_secret(call.runtime)  # generated on first use, as at EmailEngine's start
        answer[settings.SERVICE_SECRET] = True
    if query.event_types:
        answer["eventTypes"] = sorted(ALL_EVENTS)
    return answers.Settings.model_validate(answer)  # by EmailEngine's names; only the keys asked for are set


async def update_settings(call: Call[UpdateSettings, NoQuery]) -> answers.SettingsUpdated:
    """`{updated: [keys]}`. Every value is checked before any is stored: a refused body changes nothing."""
    given = call.body.given()
    secret = given.pop(settings.SERVICE_SECRET, None)
    if settings.SERVICE_SECRET in call.body.given():
        if secret is None:
            raise BadInput(f"{settings.SERVICE_SECRET} must be a string", field=settings.SERVICE_SECRET)
        secret = settings.check_service_secret(secret)
    if given:
        await webhook_settings.update_webhook_settings(call.runtime, given)
    if secret is not None:
        await settings.set_service_secret(call.runtime, secret)
    return answers.SettingsUpdated(updated=sorted(call.body.given()))
