"""The one way tests build app-download events: every field of the contract, valid by default."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

FIRST_DAY = dt.date(2024, 1, 1)


def make_event(n: int = 0, *, day: str | dt.date | None = None, users: int = 50, with_id: bool = False,
               **overrides: Any) -> dict[str, Any]:
    """A valid event as a client POSTs it (JSON types, the fields of `appdata.contract.schema.FIELDS`).

    `n` makes it distinct and its content (hence its derived event_id) stable; the day defaults to one
    of four weeks from FIRST_DAY, the user to one of `users`; every seventh event has no size (null).
    `with_id` adds a client event_id (stable per `n`); `overrides` replace any field, or add one.
    """
    record = {
        "user_id": 100_001 + n % users,
        "name": f"Person {n}",
        "location": "California",
        "age": 20 + n % 50,
        "app": f"App {n}",
        "category": "GAME",
        "rating": 4.2,
        "reviews": 100 + n,
        "size_mb": None if n % 7 == 0 else 12.5,
        "installs": 10000,
        "type": "Free",
        "price": 0.0,
        "content_rating": "Everyone",
        "genres": "Arcade;Action",
        "last_updated": "2018-07-01",
        "current_ver": "1.2.3",
        "android_ver": "4.1 and up",
        "minutes_spent": 30 + n % 60,
        "download_date": str(day or FIRST_DAY + dt.timedelta(days=n % 28)),
    }
    if with_id:
        record = {"event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"test-{n}")), **record}
    record.update(overrides)
    return record


def todays_event(n: int = 0, **overrides: Any) -> dict[str, Any]:
    """make_event as the stream tests want it: today's (one lake partition), with a client event_id,
    from seven users (100_001..100_007, so a test can name them)."""
    return make_event(n, day=dt.date.today(), users=7, with_id=True, **overrides)
