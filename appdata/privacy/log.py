"""The erasure request log: `privacy/requests/<id>.json`, without personal data.

`file_request` puts the user on the forgotten list (every door drops their events from then on)
and logs the request: when, by whom, its status and, once carried out (`requests.carry_out`),
the rows removed per place and the places still holding a trace (none, or the request says
where). The log never holds the user id; the forgotten list links the request to the user.
Light on purpose: the ingest API (Lambda) files requests with nothing else of the pipeline.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from appdata import aws
from appdata.contract import layout
from appdata.privacy import forgotten


@dataclass
class ErasureRequest:
    request_id: str
    requested_at: str
    requested_by: str
    status: str = "pending"  # pending -> in_progress -> done (or pending again, with its traces)
    removed: dict[str, int] = field(default_factory=dict)
    traces: dict[str, int] = field(default_factory=dict)  # left after the erasure (Kinesis aside): none when done
    completed_at: str | None = None
    started_at: str | None = None


IN_PROGRESS_FOR = dt.timedelta(minutes=30)  # longer than any erasure: one that "runs" longer has died


def waiting(request: ErasureRequest, now: dt.datetime) -> bool:
    """Not done, and not being carried out right now (by `appdata forget` or a run)."""
    if request.status == "done":
        return False
    if request.status == "in_progress" and request.started_at:
        return now - dt.datetime.fromisoformat(request.started_at) > IN_PROGRESS_FOR
    return True


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def save(s3: Any, bucket: str, request: ErasureRequest) -> None:
    s3.put_object(Bucket=bucket, Key=layout.erasure_request_key(request.request_id),
                  Body=json.dumps(asdict(request), indent=1).encode())


def load(s3: Any, bucket: str, request_id: str) -> ErasureRequest:
    body = s3.get_object(Bucket=bucket, Key=layout.erasure_request_key(request_id))["Body"].read()
    return ErasureRequest(**json.loads(body))


def all_requests(s3: Any, bucket: str) -> list[ErasureRequest]:
    return [load(s3, bucket, key[len(layout.ERASURE_REQUESTS):-len(".json")])
            for key in aws.list_keys(s3, bucket, layout.ERASURE_REQUESTS) if key.endswith(".json")]


def file_request(s3: Any, bucket: str, user_id: int, requested_by: str) -> ErasureRequest:
    """The user forgotten at every door from now on, and the request logged as pending."""
    request = ErasureRequest(uuid.uuid4().hex, _now(), requested_by)
    save(s3, bucket, request)
    forgotten.add(s3, bucket, user_id, request.request_id)
    return request


def user_of(s3: Any, bucket: str, request_id: str) -> int | None:
    for key in aws.list_keys(s3, bucket, layout.FORGOTTEN):
        if request_id in forgotten.request_ids(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())):
            return int(key[len(layout.FORGOTTEN):])
    return None


