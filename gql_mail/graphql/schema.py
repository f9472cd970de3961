"""The schema, and the one place its exported SDL comes from (`gql-mail schema`)."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.types import ExecutionContext

from gql_mail.graphql.errors import CodedErrors
from gql_mail.graphql.input_bounds import InputBounds
from gql_mail.graphql.mutations import Mutation
from gql_mail.graphql.operation_label import OperationLabel
from gql_mail.graphql.queries import Query
from gql_mail.graphql.subscriptions import Subscription


class GqlMailSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # CodedErrors logs what is unexpected; expected errors are answers, not log lines.
        return None


def build_schema(max_depth: int = 12, max_aliases: int = 50, max_tokens: int = 5000) -> strawberry.Schema:
    """Depth, alias and token limits bound what one document may cost; InputBounds what its lists may."""
    # Strawberry builds fresh extension instances per request (factories); the parse and validation caches
    # are shared anyway. The limit rules are built once: a new rule class per request would make every
    # request's rule tuple different, and the validation cache would never hit.
    limit_rules = (
        *QueryDepthLimiter(max_depth=max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=max_aliases).validation_rules,
    )
    extensions: list[Any] = [
        CodedErrors,
        lambda: ParserCache(maxsize=1000),
        lambda: AddValidationRules(list(limit_rules)),
        lambda: ValidationCache(maxsize=1000),
        InputBounds,  # after validation (see its docstring)
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        OperationLabel,
    ]
    return GqlMailSchema(query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions)


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
