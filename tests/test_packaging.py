"""What the distribution ships: every package of the tree, and the migration scripts inside it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from gql_mail.migrations import scripts_directory

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_package() -> None:
    """The list is written by hand (the migrations are mapped in from alembic/); a new subpackage must be
    added to it, or the wheel would lack it."""
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    in_tree = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "gql_mail").rglob("__init__.py")
    }
    assert set(listed) == in_tree | {"gql_mail._alembic", "gql_mail._alembic.versions"}


def test_migration_scripts_are_found_through_the_package() -> None:
    """In this checkout (an editable install) the package is the top-level alembic/ folder itself."""
    scripts = scripts_directory()
    assert scripts.resolve() == (ROOT / "alembic").resolve()
    assert (scripts / "env.py").is_file() and (scripts / "script.py.mako").is_file()
    assert sorted(scripts.glob("versions/*.py"))
