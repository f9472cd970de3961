"""Applying alembic migrations from code: `serve` and `migrate` both call `upgrade`.

Migrations are the only way tables come to exist, so tests run them too (never `create_all`).

The scripts are the top-level `alembic/` folder of the source tree, which the distribution ships as the
package `gql_mail._alembic` (pyproject's package-dir), so they are found through the import system
wherever gql-mail is installed and from any working directory; `alembic.ini` is only for running the
`alembic` tool in a checkout, and the options it would give are set here.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
from importlib.machinery import PathFinder
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

SCRIPTS_PACKAGE = "gql_mail._alembic"


def scripts_directory() -> Path:
    """The folder holding `env.py`, `script.py.mako` and `versions/` (every file there is a migration)."""
    spec = importlib.util.find_spec(SCRIPTS_PACKAGE)
    if spec is None:
        # An editable install (`pip install -e .`): setuptools' finder does not import a namespace
        # subpackage mapped from another folder (pypa/setuptools#4943), but the path hook it puts on
        # sys.path answers a search for it.
        spec = PathFinder.find_spec(SCRIPTS_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / "env.py").is_file():
            return Path(location)
    raise RuntimeError(f"gql-mail's migration scripts ({SCRIPTS_PACKAGE}) are not installed")


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(scripts_directory()))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["database_url"] = database_url
    return cfg


# Any constant shared by every gql-mail process: the key of the advisory lock below.
_MIGRATION_LOCK = 0x67716C6D61696C  # "gqlmail"


def _upgrade(connection: Connection, cfg: Config) -> None:
    if connection.dialect.name == "postgresql":
        # Several nodes starting at once on a new database would race to create the same tables; the
        # first takes this lock (held until its transaction commits), the others then find the schema
        # at head and do nothing.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def upgrade(database_url: str) -> None:
    """Bring the database to the newest schema (idempotent)."""
    cfg = alembic_config(database_url)
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, cfg)
    finally:
        await engine.dispose()


def upgrade_sync(database_url: str) -> None:
    asyncio.run(upgrade(database_url))


@functools.cache
def head_revisions() -> frozenset[str]:
    """The revisions this code expects the database at (read once: it parses every migration script)."""
    return frozenset(ScriptDirectory.from_config(alembic_config("")).get_heads())
