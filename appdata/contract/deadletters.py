"""Dead letters: one shape, one writer and one reader for every path that rejects a record.

A dead letter is one JSON line:
    {"source": "api"|"stream"|"batch", "field", "reason", "row", "record", "rejected_at", ...context}
`record` is what was rejected, as received (`schema.json_safe`: literals the contract refused
kept as text); `row` its position in the request, range or landing file; the context says where
it came from (the API's request_id; the drain's stream, shard_id, sequence_number,
partition_key, approximate_arrival; the ETL's landing_key and landing_day).

Each writer files its letters under `layout.rejected_key(source, D, name)`, D being the record's
download_date when that is a date, else the writer's fallback day (the request's day, the
record's arrival day, the landing day), and `name` deterministic, so a retry rewrites the same
object and never adds a second copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from appdata.contract import layout, schema
from appdata.contract.days import parse_day

def letter(source: str, *, field: str | None, reason: str, row: int | None, record: Any, rejected_at: str,
           **context: Any) -> dict[str, Any]:
    """The one shape of a dead letter."""
    return {"source": source, "field": field, "reason": reason, "row": row, "record": schema.json_safe(record),
            "rejected_at": rejected_at, **context}


def filing_day(record: Any, fallback: str) -> str:
    """The record's download_date (its first ten characters) when that is a date, else `fallback`."""
    value = record.get("download_date") if isinstance(record, dict) else None
    if isinstance(value, str):
        try:
            return parse_day(value.strip()[:10]).isoformat()
        except ValueError:
            pass
    return fallback


# Every character str.splitlines() ends a line at. json.dumps(ensure_ascii=False) escapes the C0
# ones but leaves U+0085, U+2028 and U+2029 raw; written as \uXXXX, a letter is one line to any reader.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_ESCAPED_BREAKS = str.maketrans({c: f"\\u{ord(c):04x}" for c in LINE_BREAKS})


def to_line(letter: dict[str, Any]) -> str:
    """One letter as one JSON line: UTF-8 text as is, every line break inside a value escaped."""
    return json.dumps(letter, default=str, ensure_ascii=False).translate(_ESCAPED_BREAKS) + "\n"


def to_jsonl(letters: Iterable[dict[str, Any]]) -> bytes:
    return "".join(to_line(line) for line in letters).encode("utf-8")


def objects(source: str, name: str, letters: Iterable[dict[str, Any]],
            fallback: Callable[[dict[str, Any]], str]) -> dict[str, bytes]:
    """key -> JSON-lines body of each object the letters are filed in (one per filing day)."""
    by_day: dict[str, list[dict[str, Any]]] = {}
    for line in letters:
        by_day.setdefault(filing_day(line["record"], fallback(line)), []).append(line)
    return {layout.rejected_key(source, day, name): to_jsonl(lines) for day, lines in sorted(by_day.items())}


def write(s3: Any, bucket: str, source: str, name: str, letters: list[dict[str, Any]],
          fallback: Callable[[dict[str, Any]], str]) -> list[str]:
    """Put the letters' objects; returns their keys."""
    written = objects(source, name, letters, fallback)
    for key, body in written.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson")
    return list(written)


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as read back: where it is stored, why it was rejected, the raw record."""

    key: str
    line: int
    source: str
    date: str
    field: str | None
    reason: str
    record: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)


def _as_record(raw: Any) -> dict[str, Any]:
    """The raw record of a dead letter: a dict, or a JSON string of one."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            value = schema.loads(raw)
        except schema.JsonError:
            return {"_raw": raw}
        return value if isinstance(value, dict) else {"_raw": value}
    return {"_raw": raw}


def parse(key: str, body: bytes) -> list[DeadLetter]:
    """Every line of one dead-letter object; a line that is not JSON is shown as its own reason.

    Lines end at a newline only: U+2028, U+0085 and the other breaks str.splitlines() knows may
    sit raw inside a letter's text (any JSON writer may leave them so) and are part of its line.
    """
    source = layout.source_of_rejected_key(key) or "?"
    date = layout.day_of_partition(key) or "?"
    letters = []
    for number, line in enumerate(body.decode("utf-8", errors="replace").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            item = schema.loads(line)
        except schema.JsonError as exc:
            letters.append(DeadLetter(key, number, source, date, None, f"dead letter line is not JSON: {exc}", {}))
            continue
        if not isinstance(item, dict):
            item = {"record": item}
        letters.append(DeadLetter(
            key=key, line=number, source=str(item.get("source") or source), date=date, field=item.get("field"),
            reason=str(item.get("reason") or ""), record=_as_record(item.get("record")),
            context={k: v for k, v in item.items() if k not in ("source", "field", "reason", "record")},
        ))
    return letters


def record_of(item: dict[str, Any]) -> dict[str, Any]:
    """A line of a user's fixed file: a dead letter as `show` prints it, or a bare record."""
    return _as_record(item["record"]) if "record" in item and "reason" in item else item
