"""The batch path's S3 work: listing its areas of the bucket (`appdata.contract.layout`), moving files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Iterable

from appdata import aws
from appdata.contract import layout


def landing_keys_by_day(client: Any, bucket: str, days: list[dt.date]) -> dict[dt.date, list[str]]:
    """Every CSV (or .csv.gz) under each day's landing prefix: the client's drop first, then the
    others (replays of fixed dead letters, `replay-<hash>.csv`) in name order. One listing for the
    whole window.

    Keys of a day without the client's drop are still listed; the caller decides what that means.
    """
    wanted = set(days)
    found: dict[dt.date, list[str]] = {}
    first, last = min(days), max(days)
    stop = layout.partition(layout.LANDING, last + dt.timedelta(days=1))
    for key in aws.list_keys(client, bucket, f"{layout.LANDING}download_date=",
                             start_after=layout.partition(layout.LANDING, first)[:-1]):
        if key >= stop:
            break
        day = layout.landing_day_of(key)
        if day in wanted and layout.is_landing_file(key):
            found.setdefault(day, []).append(key)
    for day, keys in found.items():
        drops = layout.landing_drop_keys(day)
        keys.sort(key=lambda k: (k not in drops, k))
    return found


def rejected_keys_by_landing_day(client: Any, bucket: str, days: set[dt.date]) -> dict[dt.date, set[str]]:
    """Existing batch dead-letter objects written for the given landing days (one listing per run)."""
    found: dict[dt.date, set[str]] = {}
    for key in aws.list_keys(client, bucket, layout.rejected_prefix("batch")):
        landing_day = layout.landing_day_of_rejected_key(key)
        if landing_day in days:
            found.setdefault(landing_day, set()).add(key)
    return found



def download(client: Any, bucket: str, key: str, path: Path) -> int:
    """Stream an object to a local file (one GET, bounded memory); returns its size in bytes."""
    response = client.get_object(Bucket=bucket, Key=key)
    size = 0
    with open(path, "wb") as out:
        for chunk in response["Body"].iter_chunks(8 << 20):
            out.write(chunk)
            size += len(chunk)
    return size


SINGLE_PUT_LIMIT = 8 << 20  # boto3's own multipart threshold


def upload(client: Any, bucket: str, key: str, path: Path, *, remove: bool = False) -> None:
    """One PUT for files up to 8 MB (a year of small days: 366 PUTs, no transfer thread pools),
    boto3's multipart transfer above. `remove`: delete the local file once it is uploaded."""
    if path.stat().st_size <= SINGLE_PUT_LIMIT:
        with open(path, "rb") as body:
            client.put_object(Bucket=bucket, Key=key, Body=body)
    else:
        client.upload_file(str(path), bucket, key)
    if remove:
        path.unlink()


def get_bytes(client: Any, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


class BackgroundIO:
    """S3 calls of a long window overlapped with the work on the next days (boto3 clients are
    thread-safe): at most `pending` calls in flight, so memory and local files stay bounded.
    `wait()` re-raises the first failure, so a step never succeeds with an object missing."""

    def __init__(self, workers: int = 4, pending: int = 8):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="appdata-s3")
        self._pending = pending
        self._futures: list = []

    def submit(self, fn, *args, **kwargs):
        if len(self._futures) >= self._pending:
            self._futures.pop(0).result()
        future = self._pool.submit(fn, *args, **kwargs)
        self._futures.append(future)
        return future

    def wait(self) -> None:
        try:
            while self._futures:
                self._futures.pop(0).result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "BackgroundIO":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.wait()
        else:  # the step already failed: let the calls in flight finish, then report the first error
            self._pool.shutdown(wait=True, cancel_futures=True)


def prefetch(fn, items: list, ahead: int = 4, workers: int = 4) -> Iterable:
    """fn(item) for each item, in order, computed up to `ahead` items in advance on threads."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="appdata-s3-read") as pool:
        futures = [pool.submit(fn, item) for item in items[:ahead]]
        for index in range(len(items)):
            result = futures[index].result()
            futures[index] = None  # keep memory bounded to the window
            if index + ahead < len(items):
                futures.append(pool.submit(fn, items[index + ahead]))
            yield result
