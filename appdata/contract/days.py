"""The one form of a day in every filter a person or program passes (CLI options, API query
parameters): exactly YYYY-MM-DD, as the event contract's dates.

Python 3.11's date.fromisoformat also reads `20201231` and `2020-W01-1` (ISO 8601's basic and
week forms); the contract refuses them in a record, so a filter refuses them too.
"""

from __future__ import annotations

import datetime as dt
import re

DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits only (\d takes any script's)


def parse_day(text: str) -> dt.date:
    """`text` as a date when it is exactly YYYY-MM-DD and a real day, else ValueError saying so."""
    if not isinstance(text, str) or not DAY.fullmatch(text):
        raise ValueError(f"must be a date YYYY-MM-DD, got {text!r}")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"must be a date YYYY-MM-DD, got {text!r} (no such day)") from None
