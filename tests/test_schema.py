"""schema.graphql is the exported SDL of the running schema and a compatible superset of the contract.

The contract and its checker live in the `shared` folder beside the repository, which a bare checkout
lacks: there the check is skipped, saying why. CI sets GQL_MAIL_REQUIRE_CONTRACT=1, which makes the
missing folder a failure, so the check cannot silently stop running there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from gql_mail.graphql.schema import export_sdl

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT.parent / "shared" / "contract.graphql"
COMPAT = ROOT.parent / "shared" / "tools" / "schema_compat.py"
REQUIRE_CONTRACT = "GQL_MAIL_REQUIRE_CONTRACT"


def require_files(paths: Sequence[Path], environ: Mapping[str, str]) -> None:
    """Skip the calling test when a file is missing, or fail it when `REQUIRE_CONTRACT` is set."""
    missing = [str(path) for path in paths if not path.is_file()]
    if not missing:
        return
    reason = f"{', '.join(missing)} not found (the shared folder is not beside this checkout)"
    if environ.get(REQUIRE_CONTRACT, "") not in ("", "0"):
        pytest.fail(f"{reason}, and {REQUIRE_CONTRACT} is set")
    pytest.skip(reason)


def test_schema_graphql_is_current() -> None:
    assert (ROOT / "schema.graphql").read_text() == export_sdl(), "run: gql-mail schema -o schema.graphql"


def test_schema_is_compatible_with_the_contract() -> None:
    require_files([COMPAT, CONTRACT], os.environ)
    result = subprocess.run(
        [sys.executable, str(COMPAT), str(CONTRACT), str(ROOT / "schema.graphql")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_contract_is_a_skip_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(pytest.skip.Exception, match="contract.graphql not found"):
        require_files([tmp_path / "contract.graphql"], {})
    with pytest.raises(pytest.skip.Exception):
        require_files([tmp_path / "contract.graphql"], {REQUIRE_CONTRACT: "0"})


def test_missing_contract_fails_when_required(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=REQUIRE_CONTRACT):
        require_files([tmp_path / "contract.graphql"], {REQUIRE_CONTRACT: "1"})


def test_present_files_pass(tmp_path: Path) -> None:
    (tmp_path / "contract.graphql").write_text("type Query { a: Int }")
    require_files([tmp_path / "contract.graphql"], {REQUIRE_CONTRACT: "1"})
