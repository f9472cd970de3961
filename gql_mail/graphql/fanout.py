"""The fan-out fast path: the plain `events` subscription without running the schema per subscriber.

Strawberry executes a subscription's selection set and serialises the result separately for every
subscriber and every event; with hundreds of subscribers that was nearly all of the server's CPU. The
common document — one `events` field, arguments `account`/`events`, scalar selections only — is
recognised once per document text, and each event is serialised once per selection shape and sent as
the same bytes to every subscriber with that shape. Anything else (fragments, directives, wrong types,
unknown event names) takes the general path, which gives the usual errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from graphql import (
    FieldNode,
    ListValueNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    StringValueNode,
    VariableNode,
    parse,
    print_ast,
)
from graphql.error import GraphQLError

from gql_mail.events import Event, iso
from gql_mail.graphql.frame_writer import OutgoingFrame, outgoing_frame
from gql_mail.services.errors import BadInput
from gql_mail.services.validation import event_names

FIELDS: dict[str, Callable[[Event], Any]] = {
    "event": lambda e: e.event,
    "account": lambda e: e.account,
    "date": lambda e: iso(e.date),
    "data": lambda e: e.data,
    "__typename": lambda e: "Event",
}
VARIABLE_TYPES = {
    "account": {"ID", "ID!", "String", "String!"},
    "events": {"[String!]", "[String!]!", "[String]", "[String]!"},
}


@dataclass(frozen=True)
class EventsPlan:
    """What one subscription document asks for: where the arguments come from and which fields to send."""

    response_key: str
    selections: tuple[tuple[str, str], ...]  # (response key, field name)
    arguments: tuple[tuple[str, Any], ...]  # (name, ("var", name) | ("value", python value))

    def resolve(self, variables: dict[str, Any] | None) -> tuple[str | None, list[str] | None] | None:
        """(account, events) for these variables, or None when they need the general path's errors."""
        values: dict[str, Any] = {"account": None, "events": None}
        for name, (kind, value) in self.arguments:
            values[name] = (variables or {}).get(value) if kind == "var" else value
        account, events = values["account"], values["events"]
        if isinstance(account, int) and not isinstance(account, bool):
            account = str(account)
        if account is not None and not isinstance(account, str):
            return None
        if isinstance(events, str):
            events = [events]
        if events is not None:
            if not isinstance(events, list):
                return None
            try:
                event_names(events)  # its size first: a huge list costs nothing here
            except (BadInput, TypeError):
                return None
            if not all(isinstance(e, str) for e in events):
                return None
        return account, events

    def frame(self, operation_id: str, event: Event) -> OutgoingFrame:
        """The whole `next` message for this subscriber, text and websocket frame. Built once per
        selection shape and operation id: clients number their operations alike ("1"), so most
        subscribers share one message, down to its frame's bytes."""
        key = (self.selections, operation_id)
        frame = event.frames.get(key)
        if frame is None:
            payload = event.wire.get(self.selections)
            if payload is None:
                fields = {key: FIELDS[name](event) for key, name in self.selections}
                payload = event.wire[self.selections] = orjson.dumps({"data": {self.response_key: fields}})
            frame = event.frames[key] = outgoing_frame(
                b'{"id":' + orjson.dumps(operation_id) + b',"type":"next","payload":' + payload + b"}"
            )
        return frame


def _literal(node: Any) -> tuple[str, Any] | None:
    if isinstance(node, VariableNode):
        return ("var", node.name.value)
    if isinstance(node, NullValueNode):
        return ("value", None)
    if isinstance(node, StringValueNode):
        return ("value", node.value)
    if isinstance(node, ListValueNode) and all(isinstance(v, StringValueNode) for v in node.values):
        return ("value", [v.value for v in node.values])  # type: ignore[attr-defined]
    return None


@lru_cache(maxsize=256)
def events_plan(query: str, operation_name: str | None) -> EventsPlan | None:
    """The plan for a plain `events` subscription, or None when the document needs the general path."""
    try:
        document = parse(query, max_tokens=2000)
    except GraphQLError:
        return None
    if len(document.definitions) != 1 or not isinstance(document.definitions[0], OperationDefinitionNode):
        return None
    operation = document.definitions[0]
    if operation.operation is not OperationType.SUBSCRIPTION or operation.directives:
        return None
    if operation_name is not None and (operation.name is None or operation.name.value != operation_name):
        return None
    selections = operation.selection_set.selections
    if len(selections) != 1 or not isinstance(selections[0], FieldNode):
        return None
    root = selections[0]
    if root.name.value != "events" or root.directives or root.selection_set is None:
        return None
    declared = {d.variable.name.value: print_ast(d.type) for d in operation.variable_definitions or ()}
    used: set[str] = set()
    arguments = []
    for argument in root.arguments or ():
        name = argument.name.value
        source = _literal(argument.value)
        if name not in VARIABLE_TYPES or source is None:
            return None
        if source[0] == "var":
            if declared.get(source[1]) not in VARIABLE_TYPES[name]:
                return None
            used.add(source[1])
        arguments.append((name, source))
    if set(declared) != used or any(
        d.default_value is not None for d in operation.variable_definitions or ()
    ):
        return None
    fields = []
    for selection in root.selection_set.selections:
        if (
            not isinstance(selection, FieldNode)
            or selection.name.value not in FIELDS
            or selection.arguments
            or selection.directives
            or selection.selection_set is not None
        ):
            return None
        fields.append(((selection.alias or selection.name).value, selection.name.value))
    if not fields or len({key for key, _ in fields}) != len(fields):
        return None
    return EventsPlan((root.alias or root.name).value, tuple(fields), tuple(arguments))
