"""Health for load balancers and orchestrators, without a token.

- `/health` (the contract's): 200 `{"status": "ok"}` when the database answers, 503 otherwise.
- `/health/live`: the process is up and its event loop answers; nothing else is checked, so a database
  outage does not get every node restarted (that would not fix it).
- `/health/ready`: this node should get traffic: the database answers, its schema is at the migrations'
  head (a node of an older or newer release than the database is not), and the workers run (an API-only
  node, `serve --no-workers`, has none to check). 503 with a JSON `reason` otherwise.
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse

from gql_mail.migrations import head_revisions
from gql_mail.runtime import Runtime

log = logging.getLogger(__name__)


async def health(request: Request) -> JSONResponse:
    rt: Runtime = request.app.state.runtime
    try:
        async with rt.db.read() as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        log.exception("health check failed")
        return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def live(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def schema_revisions(rt: Runtime) -> frozenset[str]:
    """The revisions the database's schema is at (alembic's own table)."""
    async with rt.db.read() as session:
        rows = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    return frozenset(str(row) for row in rows)


def _unavailable(reason: str, **details: object) -> JSONResponse:
    return JSONResponse({"status": "unavailable", "reason": reason, **details}, status_code=503)


async def ready(request: Request) -> JSONResponse:
    rt: Runtime = request.app.state.runtime
    try:
        revisions = await schema_revisions(rt)
    except Exception as exc:
        log.warning("readiness: the database does not answer: %s", exc)
        return _unavailable("database unreachable")
    expected = head_revisions()
    if revisions != expected:
        return _unavailable(
            "database schema is not at the migrations' head (run gql-mail migrate)",
            database=sorted(revisions),
            expected=sorted(expected),
        )
    workers = request.app.state.workers
    problem = "workers are not running" if workers is None else workers.problem()
    if problem is not None:
        return _unavailable(problem)
    return JSONResponse({"status": "ok", "workers": "running" if workers.background else "disabled"})
