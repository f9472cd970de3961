"""Refuse an oversized list or map in a request before graphql-core coerces it.

Coercing variables builds an input object per list item (100,000 recipients are 100,000 objects) and runs
before any resolver could count them, so the count is checked first: every list and every map (a JSON
scalar such as `headers`, or an input object) in the variables and in the document's argument literals
may hold at most `input_bound(settings)` items. The variables are checked after validation
(`OperationHooks.on_validate`, operation_hooks.py), the literals by a validation rule
(`literal_bounds_rule`), whose verdict the validation cache keeps with the document's. The services then
apply each field's own limit (recipients, reply-to, attachments, headers, statuses, event names) with a
message that names it; this is the bound on what any of them may cost to look at.
BAD_USER_INPUT, with `extensions.field` the name of the list.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    ArgumentNode,
    ASTValidationRule,
    GraphQLError,
    ListValueNode,
    ObjectFieldNode,
    ObjectValueNode,
)
from graphql.language import BREAK

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


def literal_bounds_rule(bound: int) -> type[ASTValidationRule]:
    """A validation rule refusing any list or object literal in the document longer than `bound` (the
    token limit bounds the document's size; this bounds what one argument may hold, as for variables).
    A rule, not a per-request check: a literal is part of the document, so the validation cache answers
    for every later request with the same text."""

    class LiteralBounds(ASTValidationRule):
        def enter_list_value(self, node: ListValueNode, _key: Any, parent: Any, *_: Any) -> Any:
            if len(node.values) > bound:
                self.report_error(_refusal("a list literal", _name_of(parent), len(node.values), bound))
                return BREAK
            return None

        def enter_object_value(self, node: ObjectValueNode, _key: Any, parent: Any, *_: Any) -> Any:
            if len(node.fields) > bound:
                self.report_error(_refusal("an object literal", _name_of(parent), len(node.fields), bound))
                return BREAK
            return None

    return LiteralBounds
