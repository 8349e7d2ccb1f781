"""Dead letters you can act on: list, show and replay rejected records.

Every path that rejects a record (the API, the Kinesis drain, the batch ETL) keeps it as JSON
lines under `s3://<bucket>/rejected/<source>/download_date=YYYY-MM-DD/`. A user lists them,
prints one object, fixes the records in a file, and replays them through the same door they
first came in by: the API (or, with `direct`, Kinesis) for api/stream records, the day's landing
prefix for batch records. Event ids are set before sending (the record's own, else one derived
from its content), so a replay run twice, or a replay of something that already went through,
never creates a duplicate downstream. A replayed object moves to `rejected/_replayed/...` so
it is not replayed twice.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd

from appdata import aws
from appdata.contract import layout, schema
from appdata.contract.days import parse_day
from appdata.contract.deadletters import DeadLetter, parse, record_of

API_BATCH_LIMIT = 500


class DeadLetterError(Exception):
    """A dead letter that cannot be listed, shown or replayed; the message says why."""


@dataclass
class ReplayResult:
    key: str
    source: str
    target: str
    event_ids: list[str]
    moved_to: str | None
    landing_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        where = ", ".join(self.landing_keys) if self.landing_keys else self.target
        moved = f"; dead letter moved to {self.moved_to}" if self.moved_to else ""
        return f"replayed {len(self.event_ids)} record(s) from {self.key} to {where}{moved}"


def normalize_key(key: str, bucket: str) -> str:
    """Accept `rejected/...`, `s3://bucket/rejected/...` or a key relative to `rejected/`."""
    key = key.strip()
    prefix = f"s3://{bucket}/"
    if key.startswith(prefix):
        key = key[len(prefix):]
    elif key.startswith("s3://"):
        raise DeadLetterError(f"{key} is not in bucket {bucket}")
    if not key.startswith(layout.REJECTED):
        key = layout.REJECTED + key.lstrip("/")
    if key.startswith(layout.REPLAYED):
        raise DeadLetterError(f"{key} was already replayed")
    return key


def _read(client: Any, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def list_dead_letters(
    client: Any, bucket: str, *, source: str | None = None, date: str | None = None
) -> list[DeadLetter]:
    """Rejected records not yet replayed, oldest day first.

    A batch day re-run after a replay rejects the original bad row again (it is still in the
    client's landing file); records already replayed from the same object are left out.
    """
    if source and source not in layout.DEAD_LETTER_SOURCES:
        raise DeadLetterError(f"unknown source {source!r}: expected one of {', '.join(layout.DEAD_LETTER_SOURCES)}")
    if date:
        try:
            parse_day(date)
        except ValueError as exc:
            raise DeadLetterError(f"--date {exc}") from None
    prefixes = [layout.rejected_prefix(s, date or None) for s in ([source] if source else layout.DEAD_LETTER_SOURCES)]
    letters: list[DeadLetter] = []
    for prefix in prefixes:
        for key in aws.list_keys(client, bucket, prefix):
            if not key.endswith(".jsonl"):
                continue
            found = parse(key, _read(client, bucket, key))
            done_key = layout.replayed_key(key)
            if aws.object_exists(client, bucket, done_key):
                done = {schema.record_digest(d.record) for d in parse(done_key, _read(client, bucket, done_key))}
                found = [d for d in found if schema.record_digest(d.record) not in done]
            letters.extend(found)
    letters.sort(key=lambda d: (d.date, d.source, d.key, d.line))
    return letters


def show_dead_letters(client: Any, bucket: str, key: str) -> list[DeadLetter]:
    key = normalize_key(key, bucket)
    if not aws.object_exists(client, bucket, key):
        raise DeadLetterError(f"no dead letter s3://{bucket}/{key} (already replayed? see rejected/_replayed/)")
    return parse(key, _read(client, bucket, key))


def read_fixed_file(path: str) -> list[dict[str, Any]]:
    """Records from a user's fixed file: bare records, or dead-letter lines as `show` prints them."""
    records = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DeadLetterError(f"{path}:{number}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
            if not line.strip():
                continue
            try:
                item = schema.loads(line)
            except schema.JsonError as exc:
                raise DeadLetterError(f"{path}:{number}: not a JSON object: {exc}") from exc
            if not isinstance(item, dict):
                raise DeadLetterError(f"{path}:{number}: not a JSON object")
            records.append(record_of(item))
    if not records:
        raise DeadLetterError(f"{path} holds no records")
    return records


def prepare_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate and type records for a replay; every event keeps (or gets) a stable event_id.

    Raises DeadLetterError naming each record, field and reason that still fails, so a user
    never replays a record that will only be rejected again.
    """
    candidates, json_rejected = schema.prepare_json_records(records)
    if not candidates and not json_rejected:
        raise DeadLetterError("nothing to replay")
    problems = [(r.position + 1, r.reason) for r in json_rejected]
    if not candidates:
        raise DeadLetterError(f"{len(problems)} record(s) still invalid, nothing replayed: "
                              + "; ".join(f"record {n}: {reason}" for n, reason in problems))
    validation = schema.validate_records(schema.records_to_frame(event for _, event in candidates))
    problems += [(candidates[int(r.row) - 1][0] + 1, r.reason) for r in validation.rejected.itertuples()]
    typed = schema.frame_to_records(validation.valid)
    invalid = set(validation.rejected["row"])
    good = [position for i, (position, _) in enumerate(candidates) if i + 1 not in invalid]
    problems += [(good[i] + 1, reason) for i, reason in schema.conflicts(typed).items()]
    if problems:
        listed = "; ".join(f"record {number}: {reason}" for number, reason in sorted(problems))
        raise DeadLetterError(
            f"{len(problems)} record(s) still invalid, nothing replayed: {listed}. "
            "Fix them in a file and pass it with --fixed."
        )
    return typed


def _put_to_kinesis(client: Any, stream: str, records: list[dict[str, Any]]) -> None:
    """PutRecords (`aws.put_records`); records still failing after its retries fail the replay."""
    outcome = aws.put_records(client, stream, records, partition_key="user_id")
    if outcome.failed:
        raise DeadLetterError(f"{len(outcome.failed)} record(s) still failing PutRecords "
                              f"({outcome.failed[0][1]}); nothing was moved, replay again")


def _post_to_api(api_url: str, api_key: str, records: list[dict[str, Any]], timeout: float = 30.0) -> None:
    """POST /v1/downloads in batches; any record the API does not accept fails the replay."""
    import httpx

    if not api_key:
        raise DeadLetterError("no API key: set APPDATA_API_KEYS or start the local stack (its key file "
                              "$APPDATA_HOME/api-key), or use --direct to write to Kinesis")
    url = api_url.rstrip("/") + "/v1/downloads"
    with httpx.Client(timeout=timeout) as http:
        for start in range(0, len(records), API_BATCH_LIMIT):
            chunk = records[start:start + API_BATCH_LIMIT]
            try:
                response = http.post(url, json=chunk, headers={"x-api-key": api_key})
            except httpx.HTTPError as exc:
                raise DeadLetterError(f"API at {api_url} unreachable: {exc.__class__.__name__}: {exc}") from exc
            if response.status_code >= 300:
                raise DeadLetterError(f"API refused the replay: HTTP {response.status_code}: {response.text[:500]}")
            rejected = _rejected_in_response(response.json())
            if rejected:
                raise DeadLetterError(f"API rejected {len(rejected)} replayed record(s): {json.dumps(rejected)[:500]}")


def _rejected_in_response(body: Any) -> list:
    if isinstance(body, dict):
        value = body.get("rejected")
        if isinstance(value, list):
            return value
        if isinstance(value, int) and value:
            return [body]
    return []


def batch_replay_csv(records: list[dict[str, Any]]) -> bytes:
    frame = pd.DataFrame.from_records(records, columns=list(schema.EVENT_COLUMNS))
    return frame.to_csv(index=False).encode("utf-8")


def _write_to_landing(client: Any, bucket: str, records: list[dict[str, Any]]) -> list[str]:
    """One CSV per download day under landing/batch/download_date=D/replay-<content hash>.csv.

    The name is a hash of the content, so replaying the same fix twice rewrites the same object.
    """
    keys = []
    by_day: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_day.setdefault(str(record["download_date"]), []).append(record)
    for day, day_records in sorted(by_day.items()):
        body = batch_replay_csv(sorted(day_records, key=lambda r: r["event_id"]))
        digest = hashlib.sha256(body).hexdigest()[:16]
        key = layout.replay_landing_key(day, digest)
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/csv")
        keys.append(key)
    return keys


def _move_to_replayed(client: Any, bucket: str, key: str) -> str:
    target = layout.replayed_key(key)
    client.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": key})
    client.delete_object(Bucket=bucket, Key=key)
    return target


def replay(
    *,
    s3_client: Any,
    bucket: str,
    key: str,
    fixed_records: list[dict[str, Any]] | None = None,
    direct: bool = False,
    kinesis_client: Any = None,
    stream: str | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
) -> ReplayResult:
    """Replay one dead-letter object (or the user's fixed version of its records)."""
    letters = show_dead_letters(s3_client, bucket, key)
    key = letters[0].key if letters else normalize_key(key, bucket)
    source = layout.source_of_rejected_key(key)
    if source is None:
        raise DeadLetterError(f"{key}: not under rejected/<api|stream|batch>/")
    records = prepare_records(fixed_records if fixed_records is not None else [d.record for d in letters])
    landing_keys: list[str] = []
    if source == "batch":
        landing_keys = _write_to_landing(s3_client, bucket, records)
        target = "landing"
    elif direct:
        if kinesis_client is None or not stream:
            raise DeadLetterError("--direct needs the Kinesis stream")
        _put_to_kinesis(kinesis_client, stream, records)
        target = f"kinesis:{stream}"
    else:
        _post_to_api(api_url or "", api_key or "", records)
        target = f"{api_url}/v1/downloads"
    moved = _move_to_replayed(s3_client, bucket, key)
    return ReplayResult(key=key, source=source, target=target, event_ids=[r["event_id"] for r in records],
                        moved_to=moved, landing_keys=landing_keys)


def format_table(letters: list[DeadLetter]) -> str:
    """A plain table: source, date, key, line, field, reason (never the record: it holds names)."""
    rows = [("SOURCE", "DATE", "KEY", "LINE", "FIELD", "REASON")]
    rows += [(d.source, d.date, d.key, str(d.line), d.field or "-", d.reason) for d in letters]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    out = io.StringIO()
    for row in rows:
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5] + "\n")
    return out.getvalue().rstrip("\n")
