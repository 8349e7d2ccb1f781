"""Where the simulated clients keep their own files (their side, not our AWS): one home for it.

The batch client holds each day's downloads as Parquet until its 23:00 drop; the stream client
posts rows of one CSV, remembers how far it got (cursor) and which event ids the API accepted
(ledger, read by the delivery check).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def batch_day_path(client_dir: Path, day: dt.date) -> Path:
    return client_dir / "batch" / f"download_date={day.isoformat()}" / "users_app_batch_client_data.parquet"


def stream_csv_path(client_dir: Path) -> Path:
    return client_dir / "stream" / "users_app_stream_client_data.csv"


def stream_cursor_path(client_dir: Path) -> Path:
    return client_dir / "stream" / "send_cursor.json"


def stream_ledger_path(client_dir: Path) -> Path:
    """Every event id the API accepted from the stream client, with when (client.record_accepted)."""
    return client_dir / "stream" / "accepted.jsonl"
