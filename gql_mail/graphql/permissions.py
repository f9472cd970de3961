"""Scopes: every operation needs a token (checked before the schema runs); mutations need scope "api"."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from gql_mail.graphql.context import Info


class CanWrite(BasePermission):
    message = "this token is read-only (scope 'read'); a token with scope 'api' is needed"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal = info.context.principal
        return principal is not None and principal.can_write


class IsAuthenticated(BasePermission):
    message = "a valid access token is required"
    error_extensions = {"code": "UNAUTHENTICATED"}

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return info.context.principal is not None
