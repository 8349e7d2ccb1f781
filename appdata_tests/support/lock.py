"""The locks in requirements/ against pyproject.toml: what `bash requirements/update` stamps on each
lock and what appdata_tests/test_lock.py checks. Standard library only: the update script runs it
before anything is installed."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

FINGERPRINT_LINE = re.compile(r"^# pyproject-fingerprint: (?P<digest>[0-9a-f]{64})$", re.MULTILINE)
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;\\]+)(?:\s*;\s*(?P<marker>[^\\]+?))?\s*\\?$",
                 re.MULTILINE)


def project_requirements(pyproject: Path) -> dict:
    """What the locks are resolved from: the requirements, the extras and the Python range."""
    project = tomllib.loads(Path(pyproject).read_text())["project"]
    return {"dependencies": project.get("dependencies", []),
            "optional-dependencies": project.get("optional-dependencies", {}),
            "requires-python": project.get("requires-python", "")}


def fingerprint(pyproject: Path) -> str:
    """A digest of `project_requirements` (not of the file: comments and other tables do not count)."""
    text = json.dumps(project_requirements(pyproject), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def stamped_fingerprint(lock: Path) -> str | None:
    match = FINGERPRINT_LINE.search(Path(lock).read_text())
    return match["digest"] if match else None


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, dict[str | None, str]]:
    """{normalized name: {environment marker or None: version}} of a lock: a universal lock may hold
    a package twice, e.g. numpy for Python < 3.12 and numpy for the newer ones."""
    found: dict[str, dict[str | None, str]] = {}
    for match in PIN.finditer(Path(lock).read_text()):
        marker = match["marker"].strip() if match["marker"] else None
        found.setdefault(normalize(match["name"]), {})[marker] = match["version"]
    return found


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "fingerprint":
        sys.exit("usage: python -m appdata_tests.support.lock fingerprint pyproject.toml")
    print(fingerprint(Path(sys.argv[2])))
