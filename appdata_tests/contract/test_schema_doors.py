"""One contract, four doors: the same value sent through POST /v1/downloads, straight into
Kinesis (the drain's decoder), in a landing CSV (the batch ETL) and in a fixed dead-letter file
(`appdata rejected replay`) gets the same verdict (accepted, or rejected naming the same field
for the same reason) and, when accepted, the same stored record.

A CSV cell holds text only, so values that only JSON can carry (objects, arrays, booleans, lone
surrogates) go through the three JSON doors; a JSON number is written in the CSV as its own
literal text. The one designed difference: a JSON event without an event_id gets one derived
from its content, while a batch row must carry its own."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from appdata.api.app import parse_records
from appdata.api.ingest import check_records
from appdata.batch import etl
from appdata.contract import layout, schema
from appdata.reliability.deadletters import DeadLetterError, prepare_records, read_fixed_file
from appdata.stream.drain import decode_records
from appdata_tests.support.events import make_event

BASE = make_event(1, event_id="evt-1", size_mb=12.5)
DAY = dt.date.fromisoformat(BASE["download_date"])
JSON_ONLY = object()  # the CSV text of a value no CSV cell can hold


class Literal(str):
    """A JSON fragment written as is (an integer of 4,400 digits, Infinity, NaN)."""


def csv_text(value: Any) -> Any:
    if isinstance(value, Literal):
        return str(value)
    if value is None:
        return ""
    if isinstance(value, (dict, list, bool)):
        return JSON_ONLY
    if isinstance(value, str):
        return JSON_ONLY if schema._not_unicode(value) else value
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)  # Infinity, -Infinity, NaN: as JSON writes them
    return json.dumps(value)


def json_body(record: dict[str, Any]) -> bytes:
    literals = {f"__literal_{i}__": v for i, v in enumerate(v for v in record.values() if isinstance(v, Literal))}
    placeholders = {v: k for k, v in literals.items()}
    text = json.dumps({k: placeholders.get(v, v) if isinstance(v, Literal) else v for k, v in record.items()})
    for placeholder, literal in literals.items():
        text = text.replace(json.dumps(placeholder), literal)
    return text.encode()


Verdict = tuple[str, str | None, str, dict | None]  # (door, field, reason, stored record)


def through_api(body: bytes) -> Verdict:
    checked = check_records(parse_records(body))
    if checked.accepted:
        return ("api", None, "", checked.accepted[0][1])
    (rejection,) = checked.rejected
    return ("api", rejection.field, rejection.reason, None)


def through_kinesis(body: bytes) -> Verdict:
    record = {"Data": body, "SequenceNumber": "1", "PartitionKey": "p",
              "ApproximateArrivalTimestamp": dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)}
    decoded = decode_records([record], shard_id="shardId-0", stream="s")
    if not decoded.valid.empty:
        return ("kinesis", None, "", decoded.valid["_event"].iloc[0])
    (line,) = decoded.rejected
    return ("kinesis", line["field"], line["reason"], None)


def through_replay(body: bytes, tmp: Path) -> Verdict:
    path = tmp / "fixed.jsonl"
    path.write_bytes(body + b"\n")
    try:
        (stored,) = prepare_records(read_fixed_file(str(path)))
    except DeadLetterError as exc:
        return ("replay", _field_of(str(exc)), _reason_of(str(exc)), None)
    return ("replay", None, "", stored)


def through_batch(record: dict[str, Any], day: dt.date, tmp: Path) -> Verdict:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # a bare CR in a value is quoted too
    writer.writerow(schema.EVENT_COLUMNS)
    writer.writerow([csv_text(record.get(c)) for c in schema.EVENT_COLUMNS])
    path = tmp / "landing.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    work = etl.WindowETL(tmp)
    work.add_day(day, layout.landing_key(day), etl.parse_landing(path, day))
    [done] = work.finish()
    if done.rejects:
        (reject,) = done.rejects
        return ("batch", reject["field"], reject["reason"], None)
    (stored,) = schema.frame_to_records(pq.read_table(done.parquet_path).to_pandas())
    return ("batch", None, "", stored)


def through_batch_file(rows: list[dict[str, Any]], day: dt.date, tmp: Path) -> list[Verdict]:
    """Many rows in one landing file of `day` (the ETL's own chunks), a verdict per row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # a bare CR in a value is quoted too
    writer.writerow(schema.EVENT_COLUMNS)
    for row in rows:
        writer.writerow([csv_text(row.get(c)) for c in schema.EVENT_COLUMNS])
    path = tmp / f"landing-{day}.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    work = etl.WindowETL(tmp)
    work.add_day(day, layout.landing_key(day), etl.parse_landing(path, day))
    [done] = work.finish()
    verdicts: list[Verdict] = [("batch", None, "", None)] * len(rows)
    for reject in done.rejects:
        verdicts[reject["row"] - 1] = ("batch", reject["field"], reject["reason"], None)
    stored = iter(schema.frame_to_records(pq.read_table(done.parquet_path).to_pandas()))
    return [v if v[1] is not None else ("batch", None, "", next(stored)) for v in verdicts]


def _field_of(message: str) -> str | None:
    """`record 1: <field>: <reason>` in a replay's refusal -> the field."""
    detail = message.split("record 1: ", 1)[1]
    return detail.split(":", 1)[0]


def _reason_of(message: str) -> str:
    detail = message.split("record 1: ", 1)[1]
    return detail.split(". Fix them", 1)[0]


SPECIAL = [
    2**53 - 1, 2**53, 2**53 + 1, -(2**53 - 1), -(2**53), -(2**53) - 1, 2**63 - 1, 2**63, -(2**63) - 1, 10**20,
    Literal("9" * 400), Literal("9" * 4_400), Literal("-" + "1" * 30), Literal("1e400"), Literal("-1e400"),
    Literal("Infinity"), Literal("-Infinity"), Literal("NaN"), Literal("1.0e2"), Literal("0.1e-400"),
    1e-300, Literal("1e-200"), "5e-131", 1e-130, "-0", Literal("-0"), -0.0,
    "inf", "-inf", "Infinity", "nan", "NaN", " NaN ", "1e400", "9" * 40, "", " ", "null", "None",
    {"a": 1}, [1], [], {}, True, False, None, 0, 1, -1, 1.5, 13, 120, 121, 4.1, 5.0, 5.01, 1e16, "12",
    "a\x00b", "\ud800", "x\udfffy", "é\ud83d", "ünïcödé",
    "2020-01-01", "2020-01-01T25:00", "2020-01-01garbage", " 2020-01-01 ", "2020-02-30", "2007-12-31", "0000-01-01",
    "  evt-1  ", "\tevt-1", "e" * 128, "e" * 129, "x" * 1_024, "x" * 1_025, "Free", " Paid ", "free",
    # the closed domains (category, content_rating, location): exact values only, padding trimmed
    "GAME", " TOOLS ", "game", "UNKNOWN", "Everyone", "Mature 17+", "Ohio", " New York ", "ohio", "Unknown",
    "District of Columbia", "Ontario", '<a href="https://evil.example/x">GAME</a>', "Ohio<br>Texas",
]

VALUES = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.from_regex(r"\A\s?[+-]?[0-9]{0,20}\.?[0-9]{0,4}(e[+-]?[0-9]{1,3})?\s?\Z"),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}.{0,3}\Z"),
    st.text(max_size=8),
)


@settings(max_examples=int(os.environ.get("APPDATA_CONTRACT_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.sampled_from([f.name for f in schema.FIELDS]), value=VALUES)
@example(name="reviews", value=Literal("9" * 4_400))
@example(name="user_id", value=2**53 + 1)
@example(name="app", value="a\x00b")
@example(name="event_id", value="e" * 129)
@example(name="download_date", value="2020-01-01garbage")
@example(name="rating", value=Literal("Infinity"))
def test_every_door_gives_the_same_verdict_and_stores_the_same_value(tmp_path, name, value):
    record = {**BASE, name: value}
    body = json_body(record)
    verdicts = [through_api(body), through_kinesis(body), through_replay(body, tmp_path)]
    text = csv_text(value)
    derived_id = name == "event_id" and text is not JSON_ONLY and schema._is_null(text)
    if text is not JSON_ONLY and not derived_id:
        accepted = verdicts[0][3]
        day = dt.date.fromisoformat(accepted["download_date"]) if accepted else DAY
        verdicts.append(through_batch(record, day, tmp_path))
    first = verdicts[0]
    for other in verdicts[1:]:
        assert other[1:] == first[1:], (name, value, first, other)


def test_every_special_value_in_every_field_gets_one_verdict_at_every_door(tmp_path):
    """The whole matrix, deterministically: each special value in each field, every case one
    record of one request, one Kinesis range, one fixed file and one landing file per day. Values
    of event_id go alone through each door ("Infinity" and the literal Infinity are one id)."""
    cases = [(name, value) for name in (f.name for f in schema.FIELDS) if name != "event_id" for value in SPECIAL]
    records = []
    for index, (name, value) in enumerate(cases):  # distinct content and ids: no record meets another
        distinct = "reviews" if name != "reviews" else "installs"  # content differs in every record
        records.append({**BASE, "event_id": f"evt-{index}", distinct: 1_000 + index, name: value})
    bodies = [json_body(record) for record in records]

    checked = check_records(schema.loads(b"[" + b",".join(bodies) + b"]"))  # parse_records caps a request at 500
    api: list[Verdict] = [("api", None, "", None)] * len(cases)
    for index, stored in checked.accepted:
        api[index] = ("api", None, "", stored)
    for rejection in checked.rejected:
        api[rejection.index] = ("api", rejection.field, rejection.reason, None)

    decoded = decode_records([{"Data": body, "SequenceNumber": str(i), "PartitionKey": "p"}
                              for i, body in enumerate(bodies)], shard_id="shardId-0", stream="s")
    kinesis: list[Verdict] = [("kinesis", None, "", None)] * len(cases)
    for line in decoded.rejected:
        kinesis[line["row"]] = ("kinesis", line["field"], line["reason"], None)
    valid = list(decoded.valid["_event"])
    for sequence, stored in zip(decoded.valid["_seq"], valid):
        kinesis[int(sequence)] = ("kinesis", None, "", stored)

    (tmp_path / "fixed.jsonl").write_bytes(b"\n".join(bodies) + b"\n")
    fixed = read_fixed_file(str(tmp_path / "fixed.jsonl"))
    replay: list[Verdict] = [("replay", None, "", None)] * len(cases)
    try:
        prepare_records(fixed)
    except DeadLetterError as exc:  # what the user reads: "record N: <field>: <reason>; ..."
        listed = str(exc).split(" nothing replayed: ", 1)[1].rsplit(". Fix them", 1)[0]
        for problem in listed.split("; record "):
            number, reason = problem.removeprefix("record ").split(": ", 1)
            replay[int(number) - 1] = ("replay", reason.split(":", 1)[0], reason, None)
    good = [i for i, v in enumerate(replay) if v[1] is None]
    for index, stored in zip(good, prepare_records([fixed[i] for i in good])):
        replay[index] = ("replay", None, "", stored)

    batch: dict[int, Verdict] = {}
    by_day: dict[dt.date, list[int]] = {}
    for index, (name, value) in enumerate(cases):
        text = csv_text(value)
        if text is JSON_ONLY or (name == "event_id" and schema._is_null(text)):
            continue
        stored = api[index][3]
        by_day.setdefault(dt.date.fromisoformat(stored["download_date"]) if stored else DAY, []).append(index)
    for day, indexes in by_day.items():
        folder = tmp_path / day.isoformat()
        folder.mkdir()
        batch.update(zip(indexes, through_batch_file([records[i] for i in indexes], day, folder)))

    disagreements = []
    for index, case in enumerate(cases):
        doors = [api[index], kinesis[index], replay[index], *([batch[index]] if index in batch else [])]
        if any(door[1:] != doors[0][1:] for door in doors[1:]):
            disagreements.append((case, doors))
    for value in SPECIAL:
        record = {**BASE, "event_id": value}
        body = json_body(record)
        doors = [through_api(body), through_kinesis(body), through_replay(body, tmp_path)]
        text = csv_text(value)
        if text is not JSON_ONLY and not schema._is_null(text):
            doors.append(through_batch(record, DAY, tmp_path))
        if any(door[1:] != doors[0][1:] for door in doors[1:]):
            disagreements.append((("event_id", value), doors))
    assert not disagreements, disagreements[:3]
    rejected = sum(v[1] is not None for v in api)
    assert 0.3 * len(cases) < rejected < 0.9 * len(cases)  # the matrix really holds both kinds
    assert len(batch) > 0.8 * len(cases)  # and most of it reached the ETL
