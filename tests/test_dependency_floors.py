""".ci/constraints-min.txt, which CI installs to prove pyproject's floors, is generated from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_min_constraints_match_pyproject() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "min_constraints.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
