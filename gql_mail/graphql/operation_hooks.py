"""gql-mail's per-operation work in Strawberry's lifecycle, as one extension.

What it does, in lifecycle order:
- on the operation: adds the limit rules (depth, aliases, list literals) to validation and the token
  limit to parsing; on the way out, codes every error (`CodedErrors`, errors.py);
- after validation (so it must come after ValidationCache): bounds the lists and maps of the variables
  (input_bounds.py), before execution coerces them;
- on execution: puts the operation's name on the HTTP request's metrics labels.

One extension rather than one per concern: Strawberry builds every extension and, per hook, a context
manager for each one per request, and with seven of them that machinery cost more than the trivial query
it wrapped (bench/http_ceiling.py's profile). The rules are built once (`build_schema`), so each request's
rule tuple is the same object and the validation cache hits.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import ASTValidationRule

from gql_mail.graphql.errors import CodedErrors
from gql_mail.graphql.input_bounds import input_bound, oversized_variable
from gql_mail.http_edge.request_metrics import current_labels


class OperationHooks(CodedErrors):
    def __init__(self, rules: tuple[type[ASTValidationRule], ...], max_tokens: int) -> None:
        super().__init__()
        self.rules = rules
        self.max_tokens = max_tokens

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.validation_rules = context.validation_rules + self.rules
        context.parse_options["max_tokens"] = self.max_tokens
        yield from super().on_operation()

    def on_validate(self) -> Iterator[None]:
        # Validation (cached) has run and set `pre_execution_errors`; a refusal added here is answered
        # before execution, whose first step is coercing the variables. Nothing is resolved.
        context = self.execution_context
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
