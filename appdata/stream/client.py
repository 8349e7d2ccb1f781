"""The simulated stream client: posts a CSV of events to the ingest API in batches.

Shared by `appdata send` and the every-minute schedule. The API answers each batch with
{"accepted": n, "rejected": [{"index", "field", "reason"}], "event_ids": [...]}; transport
errors and 5xx are retried with backoff (event ids make a retried POST harmless downstream).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from appdata.config import Settings, client_api_key


class ApiError(RuntimeError):
    """The ingest API did not take a batch; the message says why (for a one-line exit)."""


class ApiUnavailable(ApiError):
    """The API did not answer (connection refused, timeouts, 5xx after retries)."""


class ApiRefused(ApiError):
    """The API answered 4xx: a key it does not know (another stack's API at that port), a bad request."""


@dataclass
class SendSummary:
    sent: int = 0
    accepted: int = 0
    rejected: list[dict] = field(default_factory=list)  # index is the position in the sent records
    event_ids: list[str] = field(default_factory=list)
    batches: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"sent": self.sent, "accepted": self.accepted, "rejected": len(self.rejected),
                "batches": self.batches, "seconds": round(self.seconds, 2)}


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _json_value(value.item())
    if hasattr(value, "isoformat"):
        return value.isoformat()[:10]
    return value


def load_client_records(path: str | Path, *, start: int = 0, limit: int | None = None) -> list[dict]:
    """Rows start..start+limit of a client CSV as JSON-ready dicts (NaN -> null)."""
    frame = pd.read_csv(path, skiprows=range(1, start + 1) if start else None, nrows=limit)
    return [{k: _json_value(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def count_csv_rows(path: str | Path) -> int:
    with open(path, "rb") as handle:
        return max(sum(1 for _ in handle) - 1, 0)


def api_key() -> str:
    """The x-api-key to send (appdata.config.client_api_key); a RuntimeError saying where it looked."""
    settings = Settings.from_env()
    key = client_api_key(settings)
    if key is None:
        raise RuntimeError(f"no API key: set APPDATA_API_KEYS or start the local stack (`appdata up` writes "
                           f"{settings.api_key_file}); the first key is sent as x-api-key")
    return key


def post_batch(client: httpx.Client, url: str, records: list[dict], *, attempts: int = 5) -> dict:
    """POST one batch; retries connection errors and 5xx with backoff, raises ApiUnavailable (or
    ApiRefused on a 4xx, which no retry changes)."""
    last: str = ""
    for attempt in range(attempts):
        try:
            response = client.post(url, json=records)
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code < 500:
                if response.status_code >= 400:
                    raise ApiRefused(f"API at {url} refused the batch: HTTP {response.status_code} {response.text[:300]}")
                return response.json()
            last = f"HTTP {response.status_code}"
        if attempt < attempts - 1:
            time.sleep(min(0.25 * 2 ** attempt, 4.0))
    raise ApiUnavailable(f"API at {url} unavailable: {last}")


def send_records(
    records: list[dict], *, api_url: str, key: str, batch_size: int = 500, rate: float | None = None,
    progress: bool = False, attempts: int = 5, timeout: float = 30.0,
) -> SendSummary:
    """Post `records` in batches at about `rate` records/s (None: as fast as the API answers)."""
    from tqdm import tqdm

    url = api_url.rstrip("/") + "/v1/downloads"
    summary = SendSummary()
    started = time.monotonic()
    bar = tqdm(total=len(records), unit="rec", disable=not progress)
    with httpx.Client(headers={"x-api-key": key}, timeout=timeout) as client:
        for offset in range(0, len(records), batch_size):
            batch = records[offset:offset + batch_size]
            answer = post_batch(client, url, batch, attempts=attempts)
            summary.batches += 1
            summary.sent += len(batch)
            summary.accepted += int(answer.get("accepted", 0))
            summary.event_ids.extend(answer.get("event_ids", []))
            for item in answer.get("rejected", []):
                summary.rejected.append({**item, "index": offset + int(item.get("index", 0))})
            bar.update(len(batch))
            if rate:
                due = started + summary.sent / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
    bar.close()
    summary.seconds = time.monotonic() - started
    return summary


def api_is_up(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(api_url.rstrip("/") + "/healthz", timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False


# --------------------------------------------------------------------------- schedule cursor


def _fingerprint(path: Path) -> str:
    """Identifies one generation of the client CSV (a regenerated file starts over): a content
    digest, the same in every process (Python's hash() is salted per process)."""
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def record_accepted(ledger_path: Path, event_ids: list[str], at: float) -> None:
    """Append what the API accepted to the client's ledger (JSON lines: at, event_ids), the
    reference the `stream_client_delivered` check holds `downloads_stream` against."""
    if not event_ids:
        return
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger_path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"at": at, "event_ids": event_ids}) + "\n")


def read_accepted(ledger_path: Path, since: float) -> list[tuple[float, list[str]]]:
    """Ledger entries accepted at or after `since` (unix seconds), oldest first."""
    if not ledger_path.exists():
        return []
    entries = []
    with open(ledger_path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                entry = json.loads(line)
                if entry["at"] >= since:
                    entries.append((float(entry["at"]), list(entry["event_ids"])))
    return entries


def send_next_batch(csv_path: Path, cursor_path: Path, *, api_url: str, key: str, batch_size: int = 100,
                    ledger_path: Path | None = None) -> dict:
    """Post the next `batch_size` rows after the cursor; advance the cursor only on success.

    The cursor file (JSON: file fingerprint, next row) is locked while posting, so two
    overlapping runs never send the same rows. With `ledger_path`, the accepted event ids
    are appended there (see `record_accepted`).
    """
    cursor_path.parent.mkdir(parents=True, exist_ok=True)
    with open(cursor_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(cursor_path.read_text()) if cursor_path.exists() else {}
        fingerprint = _fingerprint(csv_path)
        start = int(state.get("next_row", 0)) if state.get("file") == fingerprint else 0
        total = count_csv_rows(csv_path)
        if start >= total:
            return {"status": "done", "next_row": start, "total": total, "sent": 0}
        records = load_client_records(csv_path, start=start, limit=batch_size)
        summary = send_records(records, api_url=api_url, key=key, batch_size=batch_size, attempts=2, timeout=15.0)
        if ledger_path is not None:
            record_accepted(ledger_path, summary.event_ids, time.time())
        state = {"file": fingerprint, "next_row": start + summary.sent, "total": total,
                 "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = cursor_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, cursor_path)
        return {"status": "sent", **summary.as_dict(), "first_row": start, "next_row": state["next_row"],
                "total": total, "event_ids": summary.event_ids}
