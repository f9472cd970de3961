"""schema.graphql is the exported SDL of the running schema and a compatible superset of the contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gql_mail.graphql.schema import export_sdl

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT.parent / "shared" / "contract.graphql"
COMPAT = ROOT.parent / "shared" / "tools" / "schema_compat.py"


def test_schema_graphql_is_current() -> None:
    assert (ROOT / "schema.graphql").read_text() == export_sdl(), "run: gql-mail schema -o schema.graphql"


def test_schema_is_compatible_with_the_contract() -> None:
    result = subprocess.run(
        [sys.executable, str(COMPAT), str(CONTRACT), str(ROOT / "schema.graphql")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
