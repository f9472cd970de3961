"""GraphiQL that works with no internet access.

Strawberry's GraphiQL page loads React, GraphiQL and the explorer plugin from unpkg, which mail servers
often cannot reach. ``graphiql_html()`` takes Strawberry's page and points it at copies of the same files
served by gql-mail itself (``graphiql_static_app()``, vendored in ``gql_mail/static/graphiql``, see
SOURCES.md there), and adapts it for gql-mail's bearer tokens:

* the headers editor is enabled, open on first load and pre-filled with
  ``{"Authorization": "Bearer <token>"}`` so a user sees where the access token goes (the untouched
  placeholder is not sent);
* the headers the user typed go with every HTTP request, and subscriptions over WebSocket carry the
  Authorization value in the ``connection_init`` payload, as ``{"Authorization": "Bearer ..."}``;
* headers are no longer saved to localStorage by default (Strawberry turns that on; a token that can send
  mail should not sit in localStorage unless the user opts in with GraphiQL's "Persist headers" setting).

The page must be served at the GraphQL endpoint's own URL (it posts to ``location.href`` without the query
string, and opens the WebSocket at the same URL), as Strawberry does.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from starlette.staticfiles import StaticFiles
from strawberry.http.ides import get_graphql_ide_html

STATIC_DIR: Path = Path(__file__).parent / "static" / "graphiql"

# Each CDN URL in Strawberry's page -> the vendored file (relative to STATIC_DIR) with the same bytes.
_ASSETS: dict[str, str] = {
    "https://unpkg.com/react@18.2.0/umd/react.production.min.js": "react@18.2.0/react.production.min.js",
    "https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js": (
        "react-dom@18.2.0/react-dom.production.min.js"
    ),
    "https://unpkg.com/js-cookie@3.0.5/dist/js.cookie.min.js": "js-cookie@3.0.5/js.cookie.min.js",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.css": "graphiql@3.8.3/graphiql.min.css",
    "https://unpkg.com/graphiql@3.8.3/graphiql.min.js": "graphiql@3.8.3/graphiql.min.js",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css": "plugin-explorer@1.0.2/style.css",
    "https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js": (
        "plugin-explorer@1.0.2/index.umd.js"
    ),
}

AUTH_PLACEHOLDER = "Bearer <token>"

# Replaces Strawberry's fetcher. GraphiQL calls the fetcher with the headers editor's current content as
# fetcherOpts.headers. A fetcher is built per call so that its wsConnectionParams hold the Authorization
# the user typed at that moment; graphiql 3.8.3's createGraphiQLFetcher opens a new graphql-ws client for
# each subscription with connectionParams = {...wsConnectionParams, ...fetcherOpts.headers}, which becomes
# the connection_init payload. HTTP requests (including introspection) send the same headers.
_FETCHER_JS = """      // gql-mail: the headers editor starts with this, to show where the token goes.
      const AUTH_PLACEHOLDER = %(placeholder)s;
      const DEFAULT_HEADERS_TEXT = JSON.stringify({ Authorization: AUTH_PLACEHOLDER }, null, 2);

      // The headers typed in the editor, with the Authorization header always spelled "Authorization"
      // (it is also the key in the websocket connection_init payload) and dropped while it is still
      // the placeholder or empty.
      function editorHeaders(headers) {
        const result = {};
        for (const [key, value] of Object.entries(headers || {})) {
          if (key.toLowerCase() === "authorization") {
            const text = String(value).trim();
            if (text && text !== AUTH_PLACEHOLDER) {
              result.Authorization = text;
            }
          } else {
            result[key] = value;
          }
        }
        return result;
      }

      const subscriptionUrl = httpUrlToWebSockeUrl(fetchURL);

      function fetcher(graphQLParams, fetcherOpts) {
        const headers = editorHeaders(fetcherOpts && fetcherOpts.headers);
        const wsConnectionParams = headers.Authorization
          ? { Authorization: headers.Authorization }
          : {};
        const fetchWithCurrentHeaders = GraphiQL.createFetcher({
          url: fetchURL,
          headers: defaultHeaders,
          subscriptionUrl,
          wsConnectionParams,
        });
        return fetchWithCurrentHeaders(
          graphQLParams,
          Object.assign({}, fetcherOpts, { headers }),
        );
      }
"""

_STRAWBERRY_FETCHER_JS = """      const subscriptionUrl = httpUrlToWebSockeUrl(fetchURL);

      const fetcher = GraphiQL.createFetcher({
        url: fetchURL,
        headers: defaultHeaders,
        subscriptionUrl,
      });
"""


def _fetcher_js() -> str:
    return _FETCHER_JS % {"placeholder": json.dumps(AUTH_PLACEHOLDER)}


_TAG_RE = re.compile(r"<(?:script|link)\b[^>]*>", re.IGNORECASE | re.DOTALL)
_CDN_ATTR_RE = re.compile(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
_CROSSORIGIN_RE = re.compile(
    r"""\s+crossorigin(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+))?(?=[\s/>])""", re.IGNORECASE
)


def _replace_once(html: str, old: str, new: str) -> str:
    count = html.count(old)
    if count != 1:
        raise RuntimeError(
            f"Strawberry's graphiql.html has changed: expected {old.strip()!r} once, found it {count} times; "
            "update gql_mail/graphiql.py"
        )
    return html.replace(old, new)


def _rewrite_tag(match: re.Match[str], static_prefix: str) -> str:
    tag = match.group(0)
    for url, local in _ASSETS.items():
        if url in tag:
            # Same-origin now: crossorigin is pointless. integrity stays, the vendored bytes match it.
            return _CROSSORIGIN_RE.sub("", tag.replace(url, f"{static_prefix}/{local}"))
    if _CDN_ATTR_RE.search(tag):
        raise RuntimeError(
            f"Strawberry's graphiql.html loads an asset that is not vendored: {tag!r}; "
            "vendor it into gql_mail/static/graphiql and add it to _ASSETS in gql_mail/graphiql.py"
        )
    return tag


@functools.lru_cache(maxsize=8)
def graphiql_html(static_prefix: str = "/graphiql-static") -> str:
    """Strawberry's GraphiQL page, loading its scripts and styles from ``static_prefix`` (where
    ``graphiql_static_app()`` is mounted) instead of unpkg, with the headers editor set up for
    gql-mail's bearer tokens.

    Raises RuntimeError if the installed Strawberry's page no longer matches what this rewrites (e.g. it
    moved to other GraphiQL versions), rather than serving a page that silently needs the internet."""
    static_prefix = static_prefix.rstrip("/")
    # Strawberry 0.341 serves this file as is (no template variables left to fill in); going through its
    # function keeps whatever it does in other versions.
    html = get_graphql_ide_html(graphql_ide="graphiql")
    html = _TAG_RE.sub(lambda m: _rewrite_tag(m, static_prefix), html)
    html = _replace_once(html, _STRAWBERRY_FETCHER_JS, _fetcher_js())
    html = _replace_once(
        html, "defaultEditorToolsVisibility: true,", 'defaultEditorToolsVisibility: "headers",'
    )
    html = _replace_once(
        html,
        "isHeadersEditorEnabled: true,\n          shouldPersistHeaders: true,",
        "isHeadersEditorEnabled: true,\n          defaultHeaders: DEFAULT_HEADERS_TEXT,",
    )
    if "unpkg.com" in html:
        raise RuntimeError("Strawberry's graphiql.html still refers to unpkg.com after rewriting")
    return html


def graphiql_static_app() -> StaticFiles:
    """Serves GraphiQL's vendored scripts and styles; mount it at the ``static_prefix`` given to
    ``graphiql_html()``."""
    return StaticFiles(directory=STATIC_DIR, check_dir=True)


__all__ = ["AUTH_PLACEHOLDER", "STATIC_DIR", "graphiql_html", "graphiql_static_app"]
