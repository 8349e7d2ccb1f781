"""The users who asked to be forgotten: one object per user under `privacy/forgotten/`.

Every door (the ingest API, the drain, the batch ETL, a replay, a backfill) drops their events,
so an erasure is never undone by data already on its way or replayed later. The list keeps the
bare user id and the ids of the requests that forgot them, nothing else: without the id no door could recognise the
user's events (Segment and RudderStack keep suppression lists the same way). A door reads the
list (one ListObjects call) for each batch it admits: a drained range, an API request, a batch
day, so a request holds at every door from the moment it is filed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, Iterable

from appdata import aws
from appdata.contract import layout

DROPPED = "the user asked to be forgotten"  # a dropped event's reason: it names no personal data


def user_id_of(value: Any) -> int | None:
    """The user a raw user_id value names, read as the contract reads it (a float64 that must be
    whole): " 7 ", "7.0", "7e0" and 7.0 are all user 7, since the contract accepts each as 7;
    None when it names nobody."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        number = value if isinstance(value, float) else float(str(value).strip())
    except (TypeError, ValueError, OverflowError):
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def names_one_of(value: Any, users: set[int]) -> bool:
    """Whether a raw user_id value, read as the contract reads it, names one of `users`."""
    return user_id_of(value) in users


def add(s3: Any, bucket: str, user_id: int, request_id: str) -> None:
    """The user on the list, linked to `request_id` and to every earlier request for them (a
    request filed twice, a retried POST: each must still find its user)."""
    earlier = entry(s3, bucket, user_id)
    body = {"request_id": request_id, "request_ids": [*request_ids(earlier), request_id],
            "since": earlier.get("since") or dt.datetime.now(dt.timezone.utc).isoformat()}
    s3.put_object(Bucket=bucket, Key=layout.forgotten_key(user_id), Body=json.dumps(body).encode())


def request_ids(found: dict) -> list[str]:
    """The requests an entry links to, the latest last."""
    return found.get("request_ids") or ([found["request_id"]] if found.get("request_id") else [])


def read(s3: Any, bucket: str) -> set[int]:
    return {int(key[len(layout.FORGOTTEN):]) for key in aws.list_keys(s3, bucket, layout.FORGOTTEN)
            if key[len(layout.FORGOTTEN):].isdigit()}


class ForgottenUsers:
    """The list as a door sees it, read again on every look."""

    def __init__(self, s3: Any, bucket: str):
        self.s3, self.bucket = s3, bucket

    def among(self, user_ids: Iterable[Any]) -> set[int]:
        """The forgotten users among `user_ids` (raw values, read by `user_id_of`)."""
        wanted = {user for user in map(user_id_of, user_ids) if user is not None}
        if not wanted:
            return set()
        return wanted & read(self.s3, self.bucket)


def entry(s3: Any, bucket: str, user_id: int) -> dict:
    """The user's entry (request id, since when); empty when the user is not on the list."""
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=layout.forgotten_key(user_id))["Body"].read())
    except s3.exceptions.NoSuchKey:
        return {}
