"""`/v1/docs`: Swagger UI for the REST API's OpenAPI document, working with no internet access.

Swagger UI's script and stylesheet are vendored in ``gql_mail/static/swagger-ui`` (see SOURCES.md there),
as GraphiQL's are, and served by gql-mail under `/v1/docs/static`. Swagger UI 5 is needed: the document is
OpenAPI 3.1, which Swagger UI 4 (the one the `swagger-ui-bundle` PyPI package ships) refuses to render.
The page sets `validatorUrl: null` (Swagger UI would otherwise send the document to an online validator)
and keeps the token it is given in memory only (`persistAuthorization` stays off).
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR: Path = Path(__file__).parent.parent / "static" / "swagger-ui"
VERSION_DIR = "swagger-ui-dist@5.35.0"

_PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>gql-mail REST API</title>
    <link rel="stylesheet" href="%(static)s/swagger-ui.css">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="%(static)s/swagger-ui-bundle.js"></script>
    <script>
      window.ui = SwaggerUIBundle({
        url: %(document)s,
        dom_id: "#swagger-ui",
        deepLinking: true,
        validatorUrl: null,
        presets: [SwaggerUIBundle.presets.apis],
        layout: "BaseLayout",
      });
    </script>
  </body>
</html>
"""


def docs_page(request: Request) -> HTMLResponse:
    """The page; its URLs start at the router's mount point (`/v1`), wherever that is."""
    root = request.scope.get("root_path", "").rstrip("/")
    page = _PAGE % {
        "static": f"{root}/docs/static/{VERSION_DIR}",
        "document": json.dumps(f"{root}/openapi.json"),
    }
    return HTMLResponse(page)


def docs_static_app() -> StaticFiles:
    """Serves Swagger UI's vendored files; mounted at `/docs/static` in the /v1 router."""
    return StaticFiles(directory=STATIC_DIR, check_dir=True)
