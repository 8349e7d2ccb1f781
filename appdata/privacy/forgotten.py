"""The users who asked to be forgotten: one object per user under `privacy/forgotten/`.

Every door (the ingest API, the drain, the batch ETL, a replay, a backfill) drops their events,
so an erasure is never undone by data already on its way or replayed later. The list keeps the
bare user id and the request's id, nothing else: without the id no door could recognise the
user's events (Segment and RudderStack keep suppression lists the same way). A door reads the
list (one ListObjects call) for each batch it admits: a drained range, an API request, a batch
day, so a request holds at every door from the moment it is filed.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterable

from appdata import aws
from appdata.contract import layout

DROPPED = "the user asked to be forgotten"  # a dropped event's reason: it names no personal data


def add(s3: Any, bucket: str, user_id: int, request_id: str) -> None:
    body = json.dumps({"request_id": request_id, "since": dt.datetime.now(dt.timezone.utc).isoformat()})
    s3.put_object(Bucket=bucket, Key=layout.forgotten_key(user_id), Body=body.encode())


def read(s3: Any, bucket: str) -> set[int]:
    return {int(key[len(layout.FORGOTTEN):]) for key in aws.list_keys(s3, bucket, layout.FORGOTTEN)
            if key[len(layout.FORGOTTEN):].isdigit()}


class ForgottenUsers:
    """The list as a door sees it, read again on every look."""

    def __init__(self, s3: Any, bucket: str):
        self.s3, self.bucket = s3, bucket

    def among(self, user_ids: Iterable[Any]) -> set[int]:
        """The forgotten users among `user_ids` (values that are not integers are nobody)."""
        wanted = set()
        for value in user_ids:
            try:
                wanted.add(int(value))
            except (TypeError, ValueError):
                continue
        if not wanted:
            return set()
        return wanted & read(self.s3, self.bucket)


def entry(s3: Any, bucket: str, user_id: int) -> dict:
    """The user's entry (request id, since when); empty when the user is not on the list."""
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=layout.forgotten_key(user_id))["Body"].read())
    except s3.exceptions.NoSuchKey:
        return {}
