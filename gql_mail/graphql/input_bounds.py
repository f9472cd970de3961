"""Refuse an oversized list or map in a request before graphql-core coerces it.

Coercing variables builds an input object per list item (100,000 recipients are 100,000 objects) and runs
before any resolver could count them, so the count is checked first: every list and every map (a JSON
scalar such as `headers`, or an input object) in the variables and in the document's argument literals
may hold at most `input_bound(settings)` items. The services then apply each field's own limit (recipients,
reply-to, attachments, headers, statuses, event names) with a message that names it; this is the bound on
what any of them may cost to look at. BAD_USER_INPUT, with `extensions.field` the name of the list.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    GraphQLError,
    ListValueNode,
    ObjectFieldNode,
    ObjectValueNode,
    Visitor,
    visit,
)
from graphql.language import BREAK
from strawberry.extensions import SchemaExtension

from gql_mail.config import Settings
from gql_mail.services import validation as v


def input_bound(settings: Settings | None) -> int:
    """The most items any list or map in a request may hold: the widest limit a field has."""
    if settings is None:
        return v.MAX_LIST_ITEMS
    return max(v.MAX_LIST_ITEMS, settings.max_recipients, settings.max_attachments, settings.max_headers)


def _refusal(where: str, field: str, size: int, bound: int) -> GraphQLError:
    return GraphQLError(
        f"{where} has {size} items; a list or map in a request holds at most {bound}",
        extensions={"code": "BAD_USER_INPUT", "field": field},
    )


def oversized_variable(variables: dict[str, Any] | None, bound: int) -> GraphQLError | None:
    """The first list or map in `variables` longer than `bound`; a walk without recursion (the request
    body's nesting is bounded where it is parsed, but a stack costs nothing here)."""
    stack: list[tuple[str, str, Any]] = [
        (f"${name}", name, value) for name, value in (variables or {}).items()
    ]
    while stack:
        where, field, value = stack.pop()
        if isinstance(value, dict):
            if len(value) > bound:
                return _refusal(where, field, len(value), bound)
            stack.extend((f"{where}.{key}", str(key), item) for key, item in value.items())
        elif isinstance(value, list):
            if len(value) > bound:
                return _refusal(where, field, len(value), bound)
            stack.extend((f"{where}[{index}]", field, item) for index, item in enumerate(value))
    return None


def _name_of(parent: Any) -> str:
    """The argument or input field a literal is the value of."""
    return parent.name.value if isinstance(parent, ArgumentNode | ObjectFieldNode) else ""


class _LiteralBounds(Visitor):
    def __init__(self, bound: int) -> None:
        super().__init__()
        self.bound = bound
        self.error: GraphQLError | None = None

    def enter_list_value(self, node: ListValueNode, _key: Any, parent: Any, *_: Any) -> Any:
        if len(node.values) > self.bound:
            self.error = _refusal("a list literal", _name_of(parent), len(node.values), self.bound)
            return BREAK
        return None

    def enter_object_value(self, node: ObjectValueNode, _key: Any, parent: Any, *_: Any) -> Any:
        if len(node.fields) > self.bound:
            self.error = _refusal("an object literal", _name_of(parent), len(node.fields), self.bound)
            return BREAK
        return None


def oversized_literal(document: DocumentNode | None, bound: int) -> GraphQLError | None:
    """The first list or object literal in the document longer than `bound` (the token limit bounds the
    document's size; this bounds what one argument may hold, as for variables)."""
    if document is None:
        return None
    visitor = _LiteralBounds(bound)
    visit(document, visitor)
    return visitor.error


class InputBounds(SchemaExtension):
    """Placed after ValidationCache: validation (which reads the document, never the variables) has run
    and set `pre_execution_errors`; a refusal added here is answered before execution, whose first step is
    coercing the variables. Nothing is resolved."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if not context.pre_execution_errors:
            runtime = getattr(context.context, "runtime", None)
            bound = input_bound(getattr(runtime, "settings", None))
            error = oversized_variable(context.variables, bound) or oversized_literal(
                context.graphql_document, bound
            )
            if error is not None:
                context.pre_execution_errors = [error]
        yield
