"""GraphiQL is served without any CDN: every script and style comes from gql-mail itself (checked against a
real gql-mail server)."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from strawberry.http.ides import get_graphql_ide_html

import gql_mail.graphiql
from gql_mail.graphiql import STATIC_DIR, graphiql_html
from tests.harness import Server

PREFIX = "/graphiql-static"

_TAG_RE = re.compile(r"<(script|link)\b([^>]*)>", re.IGNORECASE | re.DOTALL)
_ATTR_RE = re.compile(r"""\b(src|href|integrity|rel)\s*=\s*"([^"]*)\"""", re.IGNORECASE)


@pytest.fixture
async def html(server: Server) -> str:
    """The page a browser gets at /graphql (no token needed to load the IDE)."""
    response = await server.http.get(server.url + "/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    text: str = response.text
    return text


def _assets(html: str) -> list[tuple[str, str, str | None]]:
    """(kind, url, integrity) of every external script and stylesheet the page loads."""
    assets: list[tuple[str, str, str | None]] = []
    for tag, attr_text in _TAG_RE.findall(html):
        attrs = {name.lower(): value for name, value in _ATTR_RE.findall(attr_text)}
        if tag.lower() == "script" and "src" in attrs:
            assets.append(("script", attrs["src"], attrs.get("integrity")))
        elif tag.lower() == "link" and attrs.get("rel") == "stylesheet":
            assets.append(("style", attrs["href"], attrs.get("integrity")))
    return assets


def test_no_cdn_urls(html: str) -> None:
    assert not re.search(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert 'src="http' not in html and 'href="http' not in html
    assert "unpkg.com" not in html
    assets = _assets(html)
    # react, react-dom, js-cookie, graphiql, explorer plugin; graphiql's and the plugin's css
    assert sorted(kind for kind, _, _ in assets) == ["script"] * 5 + ["style"] * 2
    assert all(url.startswith(PREFIX + "/") for _, url, _ in assets)
    assert "crossorigin" not in html


async def test_every_asset_is_served(server: Server, html: str) -> None:
    for kind, url, integrity in _assets(html):
        response = await server.http.get(server.url + url)
        assert response.status_code == 200, url
        assert len(response.content) > 500, url
        content_type = response.headers["content-type"]
        if kind == "script":
            assert content_type.split(";")[0] in ("text/javascript", "application/javascript"), url
        else:
            assert content_type.startswith("text/css"), url
        # The page keeps the CDN's subresource-integrity hashes; the vendored bytes must match them.
        assert integrity is not None, url
        algorithm, _, expected = integrity.partition("-")
        assert algorithm == "sha384"
        assert base64.b64encode(hashlib.sha384(response.content).digest()).decode() == expected, url


def test_licenses_vendored_next_to_assets() -> None:
    for directory in STATIC_DIR.iterdir():
        if directory.is_dir():
            assert (directory / "LICENSE").is_file(), directory


async def test_static_app_serves_nothing_outside_its_directory(server: Server) -> None:
    # httpx would normalise the dots away; the escaped form reaches the server as written.
    for path in (f"{PREFIX}/%2E%2E/graphiql.py", f"{PREFIX}/../graphiql.py", f"{PREFIX}/no-such-file.js"):
        assert (await server.http.get(server.url + path)).status_code == 404, path


def test_headers_editor_defaults_to_authorization(html: str) -> None:
    assert "isHeadersEditorEnabled: true" in html
    assert "defaultHeaders: DEFAULT_HEADERS_TEXT" in html
    assert 'const AUTH_PLACEHOLDER = "Bearer <token>";' in html
    assert "JSON.stringify({ Authorization: AUTH_PLACEHOLDER }" in html
    assert 'defaultEditorToolsVisibility: "headers"' in html
    # A bearer token is not put into localStorage unless the user asks for it in GraphiQL's settings.
    assert "shouldPersistHeaders: true" not in html


def test_websocket_connection_params_carry_authorization(html: str) -> None:
    assert "wsConnectionParams" in html
    assert "{ Authorization: headers.Authorization }" in html
    assert "subscriptionUrl," in html


def test_custom_prefix() -> None:
    html = graphiql_html("/static/gql/")
    assert 'src="/static/gql/graphiql@3.8.3/graphiql.min.js"' in html
    assert 'href="/static/gql/graphiql@3.8.3/graphiql.min.css"' in html


def test_unknown_cdn_asset_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Strawberry upgrade that moves to other GraphiQL versions must fail loudly, not need the internet."""
    original = get_graphql_ide_html(graphql_ide="graphiql")
    changed = original.replace("graphiql@3.8.3/graphiql.min.js", "graphiql@9.9.9/graphiql.min.js")
    monkeypatch.setattr(gql_mail.graphiql, "get_graphql_ide_html", lambda graphql_ide: changed)
    graphiql_html.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="not vendored"):
            graphiql_html("/elsewhere")
    finally:
        graphiql_html.cache_clear()
