"""`GET /v1/stats` in EmailEngine's shape, with what gql-mail has (services/stats.py): its version, the
accounts and their states as `connections`, and the outbox and webhook deliveries as the `submit` and
`notify` queues. EmailEngine's Redis and Node fields and its event `counters` have no counterpart."""

from __future__ import annotations

import platform
from importlib.metadata import version

from gql_mail.models import MessageStatus
from gql_mail.rest import answers
from gql_mail.rest.endpoint import Call
from gql_mail.rest.models import StatsQuery
from gql_mail.rest.states import ee_state
from gql_mail.services import stats

# Every key of EmailEngine's `connections`, so a client reading one finds it (0 when none).
CONNECTIONS = tuple(field.alias or name for name, field in answers.Connections.model_fields.items())


async def get_stats(call: Call[None, StatsQuery]) -> answers.Stats:
    found = await stats.counts(call.runtime)
    connections = dict.fromkeys(CONNECTIONS, 0)
    for state, count in found.accounts.items():
        connections[ee_state(state)] += count  # every state gql-mail stores has an EmailEngine key
    messages, deliveries = found.messages, found.deliveries
    return answers.Stats(
        version=version("gql-mail"),
        python=platform.python_version(),
        arch=platform.machine(),
        accounts=sum(found.accounts.values()),
        connections=answers.Connections.model_validate(connections),
        queues=answers.Queues(
            submit=answers.QueueCounts(
                active=messages.get(MessageStatus.SENDING, 0),
                delayed=found.scheduled,
                paused=0,
                waiting=messages.get(MessageStatus.QUEUED, 0),
                failed=messages.get(MessageStatus.FAILED, 0),
            ),
            notify=answers.QueueCounts(
                active=deliveries.get("sending", 0),
                delayed=found.deliveries_delayed,
                paused=0,
                waiting=deliveries.get("pending", 0),
                failed=deliveries.get("failed", 0),
            ),
        ),
    )
