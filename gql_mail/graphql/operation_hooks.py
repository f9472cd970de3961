"""gql-mail's per-operation work in Strawberry's lifecycle, as one extension.

What it does, in lifecycle order:
- on the operation: adds the limit rules (depth, aliases, list literals) to validation; on the way out,
  codes every error (`CodedErrors`, errors.py);
- parsing and validation: answered from `DocumentCache` by the query's text (the token limit applies to
  parsing);
- after validation: bounds the lists and maps of the variables (input_bounds.py), before execution
  coerces them;
- on execution: puts the operation's name on the HTTP request's metrics labels.

Why not Strawberry's ParserCache and ValidationCache: the validation cache is keyed by the parsed
document, and graphql-core hashes a document by walking its whole tree in Python, on every request (a
visible share of a submitMessage's CPU); a text's hash is one C loop. Clients that send variables keep
the text constant, so it hits. This relies on Strawberry's `validate_document` (its default rules plus
its own two), as its ValidationCache does, and on `ExecutionContext.schema._schema`.

One extension rather than one per concern: Strawberry builds every extension and, per hook, a context
manager for each one per request, and with seven of them that machinery cost more than the trivial query
it wrapped (bench/http_ceiling.py's profile). The rules are built once (`build_schema`), so each request's
rule tuple is the same object and the validation cache hits.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse
from strawberry.schema.schema import validate_document

from gql_mail.graphql.errors import CodedErrors
from gql_mail.graphql.input_bounds import input_bound, oversized_variable
from gql_mail.http_edge.request_metrics import current_labels


class DocumentCache:
    """Parsed documents, and validation verdicts, by query text: LRU caches of `maxsize` each, one per
    schema (a parse error is not cached: it is raised again, as by graphql-core)."""

    def __init__(self, max_tokens: int, maxsize: int = 1000) -> None:
        self.max_tokens = max_tokens
        self.parse = lru_cache(maxsize=maxsize)(self._parse)
        self.validate = lru_cache(maxsize=maxsize)(self._validate)

    def _parse(self, query: str) -> DocumentNode:
        return parse(query, max_tokens=self.max_tokens)

    def _validate(
        self, schema: GraphQLSchema, query: str, rules: tuple[type[ASTValidationRule], ...]
    ) -> list[GraphQLError]:
        return validate_document(schema, self.parse(query), rules)


class OperationHooks(CodedErrors):
    def __init__(self, rules: tuple[type[ASTValidationRule], ...], documents: DocumentCache) -> None:
        super().__init__()
        self.rules = rules
        self.documents = documents

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.validation_rules = context.validation_rules + self.rules
        yield from super().on_operation()

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is None and context.query:
            context.graphql_document = self.documents.parse(context.query)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.query and context.pre_execution_errors is None:
            context.pre_execution_errors = self.documents.validate(
                context.schema._schema, context.query, context.validation_rules
            )
        # A refusal added here is answered before execution, whose first step is coercing the variables.
        # Nothing is resolved.
        if not context.pre_execution_errors and context.variables:
            runtime = getattr(context.context, "runtime", None)
            error = oversized_variable(context.variables, input_bound(getattr(runtime, "settings", None)))
            if error is not None:
                context.pre_execution_errors = [error]
        yield

    def on_execute(self) -> Iterator[None]:
        # Here, not from the request body: only the parsed document knows the name when the client sent
        # no `operationName`. Websocket operations are not HTTP requests; their labels go nowhere.
        context = self.execution_context
        runtime = getattr(context.context, "runtime", None)
        if runtime is not None:
            current_labels().operation = runtime.metrics.operation_label(context.operation_name)
        yield
