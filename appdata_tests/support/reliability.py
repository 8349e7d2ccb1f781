"""The reliability tests' figures: short in CI, full with APPDATA_RELIABILITY_FULL=1, printed for the README."""

from __future__ import annotations

import os
from typing import Any

FULL = os.environ.get("APPDATA_RELIABILITY_FULL", "") == "1"


def scale(short: Any, full: Any) -> Any:
    """The short figure in CI, the full one under APPDATA_RELIABILITY_FULL=1."""
    return full if FULL else short


def report(what: str, **figures: Any) -> None:
    """Print what a test tried, so `pytest -s` (and the README figures) show it."""
    print(f"\n[reliability] {what}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


def put_dead_letter(s3_client, bucket: str, source: str, day: str, name: str, letters: list[dict]) -> str:
    """Write a rejected object with the pipeline's own dead-letter writer."""
    from appdata.contract import deadletters

    lines = [deadletters.letter(source, row=i, rejected_at="2024-01-01T00:00:00Z", **letter)
             for i, letter in enumerate(letters, start=1)]
    (key,) = deadletters.write(s3_client, bucket, source, name, lines, lambda _: day)
    return key
