"""Where the real Kaggle catalogue is: the one answer every real-data test uses.

Looked for, in order:
1. `APPDATA_PLAYSTORE_CSV`, the variable the pipeline itself reads (as set when the test session
   started: the test environments unset it, so a test's own settings never pick it up);
2. `../shared/data/googleplaystore.csv` next to the repository root.

Tests take it through the `real_catalogue` fixture (appdata_tests/conftest.py), which skips with
`missing_reason()` when neither is there; code that is no fixture calls `real_catalogue_path()`.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "APPDATA_PLAYSTORE_CSV"
REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_CATALOGUE = REPO_ROOT.parent / "shared" / "data" / "googleplaystore.csv"
# Read when the test session imports this module (conftest.py does, before any fixture runs):
# the per-test environments delete the variable, but the file it names is still the real one.
_ENV_AT_START = os.environ.get(ENV_VAR, "")


def _from_env() -> str:
    return os.environ.get(ENV_VAR, "") or _ENV_AT_START


def candidates() -> list[Path]:
    """Where to look, first match wins: APPDATA_PLAYSTORE_CSV (when set), then ../shared."""
    found = [Path(_from_env()).expanduser()] if _from_env() else []
    return found + [SHARED_CATALOGUE]


def real_catalogue_path() -> Path | None:
    """The real Kaggle googleplaystore.csv, or None when neither place holds a file."""
    for path in candidates():
        if path.is_file():
            return path
    return None


def missing_reason() -> str:
    """Why a real-data test is skipped: names both places looked at."""
    value = _from_env()
    env = f"{ENV_VAR}={value} (no such file)" if value else f"{ENV_VAR} (unset)"
    return f"real Kaggle catalogue not found: looked at {env} and {SHARED_CATALOGUE}"
