"""`GET /oauth`: where an OAuth2 provider sends the user back after the consent (EmailEngine's route, which
an app's `redirectUrl` names). No token: the user's browser comes here; the sealed `state` is what proves
the request was started through the API."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from gql_mail.rest import boom
from gql_mail.runtime import Runtime
from gql_mail.services import oauth2_consent
from gql_mail.services.errors import ServiceError


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


async def oauth_callback(request: Request) -> Response:
    """Register the account and send the user on to the request's `redirectUrl` (with `account` and
    `state` new|existing), or answer `{account, state}` when it named none."""
    rt: Runtime = request.app.state.runtime
    params = request.query_params
    if "error" in params:  # the user declined, or the provider refused the request
        text = params.get("error_description") or params["error"]
        return boom.boom(400, f"OAuth2 consent failed: {text[:300]}", code="OauthConsentError")
    code, state = params.get("code"), params.get("state")
    if not code or not state:
        return boom.boom(400, "OAuth2 callback without code and state")
    try:
        done = await oauth2_consent.finish_consent(rt, code, state)
    except ServiceError as exc:
        return boom.from_service_error(exc)
    outcome = "new" if done.created else "existing"
    if done.return_url:
        return RedirectResponse(_with_query(done.return_url, account=done.account, state=outcome), 302)
    return JSONResponse({"account": done.account, "state": outcome})
