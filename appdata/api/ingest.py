"""The ingest path behind POST /v1/downloads: validate, dead-letter, put to Kinesis.

Kept apart from the HTTP layer so the same functions serve the FastAPI route, the Lambda
handler and direct tests. Every validation decision comes from `appdata.contract.schema`, so the API
rejects exactly what the batch ETL, the stream drain and a replay reject (JSON rules included:
`schema.prepare_json_records`, shared with the drain and replay).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from appdata import aws
from appdata.contract import deadletters, schema
from appdata.privacy import forgotten

log = logging.getLogger("appdata.api")

MAX_RECORDS_PER_REQUEST = 500


@dataclass
class Rejection:
    index: int
    field: str
    reason: str
    record: Any

    def public(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


@dataclass
class Checked:
    """Outcome of validating one request's records."""

    accepted: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (index, typed record)
    rejected: list[Rejection] = field(default_factory=list)


def check_records(records: list[Any]) -> Checked:
    """Validate every record with `appdata.contract.schema`: its JSON rules, `validate_records`, then the
    duplicate rule (a second record of one event_id with other content is rejected)."""
    out = Checked()
    candidates, json_rejected = schema.prepare_json_records(records)
    out.rejected = [Rejection(r.position, r.field, r.reason, r.record) for r in json_rejected]
    if not candidates:
        return out

    validation = schema.validate_records(schema.records_to_frame(r for _, r in candidates), first_row=0)
    bad_positions = set()
    for row in validation.rejected.itertuples(index=False):
        position = int(row.row)
        bad_positions.add(position)
        index, candidate = candidates[position]
        out.rejected.append(Rejection(index, row.field, row.reason, {**records[index], "event_id": candidate["event_id"]}))
    typed = schema.typed_records(validation.valid)
    good = [c for position, c in enumerate(candidates) if position not in bad_positions]
    accepted = [(index, rec) for (index, _), rec in zip(good, typed, strict=True)]
    conflicting = schema.conflicts([rec for _, rec in accepted])
    for position, reason in conflicting.items():
        index, rec = accepted[position]
        out.rejected.append(Rejection(index, "event_id", reason, records[index]))
    out.accepted = [item for position, item in enumerate(accepted) if position not in conflicting]
    out.rejected.sort(key=lambda r: r.index)
    return out


def drop_forgotten(checked: Checked, users: forgotten.ForgottenUsers) -> list[Rejection]:
    """Take the records of users who asked to be forgotten out of `checked`: refused by index
    with a reason that names no personal data, and never dead-lettered (nothing of theirs is kept)."""
    records = checked.accepted + [(r.index, r.record) for r in checked.rejected if isinstance(r.record, dict)]
    gone = users.among(record.get("user_id") for _, record in records)
    if not gone:
        return []

    def of_gone(record: Any) -> bool:
        return isinstance(record, dict) and bool(users_of(record) & gone)

    dropped = [Rejection(index, "user_id", forgotten.DROPPED, None) for index, record in checked.accepted
               if of_gone(record)]
    dropped += [Rejection(r.index, "user_id", forgotten.DROPPED, None) for r in checked.rejected if of_gone(r.record)]
    checked.accepted = [(index, record) for index, record in checked.accepted if not of_gone(record)]
    checked.rejected = [r for r in checked.rejected if not of_gone(r.record)]
    return dropped


def users_of(record: dict) -> set[int]:
    """The user a record names, read as the contract reads user_id ("1.00002e5" is user 100002)."""
    user = forgotten.user_id_of(record.get("user_id"))
    return set() if user is None else {user}


def request_id_for(body: bytes) -> str:
    """Deterministic per body: a retried identical POST rewrites the same dead-letter object."""
    return "req-" + hashlib.sha256(body).hexdigest()[:24]


def write_dead_letters(s3_client: Any, bucket: str, request_id: str, rejected: list[Rejection]) -> list[str]:
    """One dead-letter object per filing day, named after the request (a retried POST rewrites it)."""
    now = dt.datetime.now(dt.timezone.utc)
    rejected_at = now.isoformat().replace("+00:00", "Z")
    letters = [deadletters.letter("api", field=item.field, reason=item.reason, row=item.index,
                                  record=item.record if isinstance(item.record, dict) else {"value": item.record},
                                  rejected_at=rejected_at, request_id=request_id) for item in rejected]
    return deadletters.write(s3_client, bucket, "api", request_id, letters, lambda _: now.date().isoformat())


class StoreUnavailable(Exception):
    """S3 or Kinesis could not be reached: the request is answered 503 so the client retries."""


def ingest(records: list[Any], *, body: bytes, s3_client: Any, bucket: str, kinesis_client: Any,
           stream: str, put_attempts: int = 6, put_base_delay: float = 0.05) -> tuple[int, dict[str, Any]]:
    """Validate, dead-letter the rejected, put the valid; returns (HTTP status, JSON body).

    Dead letters are written first: if S3 fails, nothing went to Kinesis and the client simply
    retries the request. Ids are deterministic, so a retry duplicates nothing downstream.
    """
    request_id = request_id_for(body)
    checked = check_records(records)
    dropped = drop_forgotten(checked, forgotten.ForgottenUsers(s3_client, bucket))
    try:
        write_dead_letters(s3_client, bucket, request_id, checked.rejected)
    except (ClientError, BotoCoreError) as exc:
        raise StoreUnavailable(f"could not store rejected records in s3://{bucket}/rejected/api/: "
                               f"{type(exc).__name__}") from exc
    typed = [rec for _, rec in checked.accepted]
    try:
        outcome = aws.put_records(kinesis_client, stream, typed, partition_key="user_id",
                                  backoff=aws.Backoff(base=put_base_delay, attempts=put_attempts))
    except (ClientError, BotoCoreError) as exc:
        raise StoreUnavailable(f"could not put records to Kinesis stream {stream}: {type(exc).__name__}") from exc

    accepted_ids = [typed[p]["event_id"] for p in outcome.succeeded]
    body_out: dict[str, Any] = {
        "accepted": len(outcome.succeeded),
        "rejected": [r.public() for r in sorted(checked.rejected + dropped, key=lambda r: r.index)],
        "event_ids": accepted_ids,
        "request_id": request_id,
    }
    log.info("ingest %s: %d accepted, %d rejected, %d failed", request_id, len(outcome.succeeded),
             len(checked.rejected), len(outcome.failed))
    if outcome.failed:
        body_out["failed"] = [
            {"index": checked.accepted[p][0], "event_id": typed[p]["event_id"], "field": "records",
             "reason": f"Kinesis did not take it after {put_attempts} attempts ({code}); retry it"}
            for p, code in outcome.failed
        ]
        body_out["detail"] = f"{len(outcome.failed)} valid records could not be put to Kinesis; retry them"
        return 503, body_out
    return (207 if checked.rejected or dropped else 200), body_out
