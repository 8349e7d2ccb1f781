"""Dead letters survive any Unicode: what the writer puts on a line, the reader gets back as one
letter, whatever line breaks (U+2028, U+0085, ...) the record's text holds."""

from __future__ import annotations

import datetime as dt
import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appdata.batch import etl
from appdata.contract import deadletters, schema

DAY = "2024-03-05"
KEY = f"rejected/api/download_date={DAY}/req-1.jsonl"


def _splitlines_breaks() -> set[str]:
    """Every code point str.splitlines() ends a line at, found by trying them all."""
    return {c for c in map(chr, range(sys.maxunicode + 1)) if len(f"a{c}b".splitlines()) == 2}


def _read_back(letters: list[dict]) -> list[deadletters.DeadLetter]:
    bodies = deadletters.objects("api", "req-1", letters, lambda _: DAY)
    return [letter for key, body in bodies.items() for letter in deadletters.parse(key, body)]


def _letter(record: dict, reason: str = "age: must be >= 13") -> dict:
    return deadletters.letter("api", field="age", reason=reason, row=0, record=record,
                              rejected_at="2024-03-05T00:00:00Z", request_id="req-1")


def test_the_writer_escapes_every_break_splitlines_knows():
    assert set(deadletters.LINE_BREAKS) == _splitlines_breaks()


@pytest.mark.parametrize("mark", sorted(_splitlines_breaks()), ids=lambda c: f"U+{ord(c):04X}")
def test_a_letter_holding_a_line_break_reads_back_as_one(mark):
    record = {"name": f"Jo{mark}e", f"odd{mark}key": mark, "age": 7}
    body = deadletters.to_jsonl([_letter(record, reason=f"age{mark}: must be >= 13")])
    assert body.count(b"\n") == 1 and len(body.decode().splitlines()) == 1
    (back,) = deadletters.parse(KEY, body)
    assert back.record == record and back.reason == f"age{mark}: must be >= 13"


def test_a_letter_written_with_raw_separators_reads_back_as_one():
    """What any JSON writer with ensure_ascii=False makes of U+2028, U+2029 and U+0085."""
    record = {"name": "a\u2028b\u2029c\x85d", "age": 7}
    body = (json.dumps(_letter(record), ensure_ascii=False) + "\n").encode()
    (back,) = deadletters.parse(KEY, body)
    assert back.record == record and "not JSON" not in back.reason


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
                                st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
                                max_size=5), min_size=1, max_size=4))
def test_letters_of_any_text_round_trip(records):
    back = _read_back([_letter(record) for record in records])
    assert [letter.record for letter in back] == records
    assert [letter.line for letter in back] == list(range(1, len(records) + 1))


def test_a_garbage_landing_file_gives_one_letter_per_line(tmp_path):
    """Landing lines full of line breaks other than \\n: each is one rejected row and one letter."""
    day = dt.date.fromisoformat(DAY)
    header = ",".join(schema.EVENT_COLUMNS)
    breaks = sorted(_splitlines_breaks() - {"\n", "\r"})
    lines = [f"garbage {i}{breaks[i % len(breaks)]}more{breaks[(i + 1) % len(breaks)]}" for i in range(300)]
    path = tmp_path / "users_app_batch_client_data.csv"
    path.write_text(header + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    window = etl.WindowETL(tmp_path / "work")
    (tmp_path / "work").mkdir()
    window.add_day(day, "landing/batch/x.csv", etl.parse_landing(path, day))
    (out,) = window.finish()
    assert out.landing_rows == out.rejected_rows == len(lines)
    bodies = deadletters.objects("batch", "x", etl.dead_letters(out, "2024-03-05T00:00:00Z"), lambda _: DAY)
    back = [letter for key, body in bodies.items() for letter in deadletters.parse(key, body)]
    assert len(back) == len(lines) and not [b for b in back if "not JSON" in b.reason]


def test_letters_with_every_break_are_listed_once_and_replayed_as_written(s3, provisioned, appdata_env):
    """write -> list -> replay (to Kinesis) on the emulator: the text arrives as it was rejected."""
    from appdata.reliability.deadletters import list_dead_letters, replay
    from appdata_tests.support.events import make_event

    breaks = sorted(_splitlines_breaks() - {"\n", "\r"})
    records = [make_event(i, day=DAY, name=f"Jo{mark}e", app=f"App{mark}{i}") for i, mark in enumerate(breaks)]
    (key,) = deadletters.write(s3, appdata_env.bucket, "api", "req-breaks", [_letter(r) for r in records],
                               lambda _: DAY)
    listed = list_dead_letters(s3, appdata_env.bucket, source="api")
    assert [(d.key, d.record["name"]) for d in listed] == [(key, r["name"]) for r in records]

    kinesis = provisioned["kinesis"].get_client()
    replay(s3_client=s3, bucket=appdata_env.bucket, key=key, direct=True, kinesis_client=kinesis,
           stream=appdata_env.stream)
    sent = []
    for shard in kinesis.list_shards(StreamName=appdata_env.stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=appdata_env.stream, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        sent += [json.loads(r["Data"]) for r in kinesis.get_records(ShardIterator=iterator, Limit=1000)["Records"]]
    assert sorted((r["name"], r["app"]) for r in sent) == sorted((r["name"], r["app"]) for r in records)
