"""`appdata rejected list|show|replay` against the real emulator: act on dead letters once."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from click.testing import CliRunner

from appdata.contract import schema
from appdata.cli.reliability import rejected
from appdata_tests.support.events import make_event
from appdata_tests.support.reliability import put_dead_letter, report

pytestmark = pytest.mark.reliability

DAY = "2024-03-05"


def _run(*args: str, ok: bool = True):
    result = CliRunner().invoke(rejected, list(args), catch_exceptions=False)
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def _kinesis_records(kinesis, stream: str) -> list[tuple[str, dict]]:
    out = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while True:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            out.extend((r["PartitionKey"], json.loads(r["Data"])) for r in page["Records"])
            if not page["Records"]:
                break
            iterator = page["NextShardIterator"]
    return out


def test_list_and_show_name_source_day_field_and_reason(s3, appdata_env):
    bad_age = make_event(1, day=DAY, age=7)
    api_key = put_dead_letter(s3, appdata_env.bucket, "api", DAY, "req-1",
                              [{"field": "age", "reason": "age: must be >= 13", "record": bad_age}])
    # The batch ETL stores the raw row as a JSON string (schema.validate_records does).
    batch_key = put_dead_letter(s3, appdata_env.bucket, "batch", "2024-03-06", "landing-abc",
                                [{"field": "download_date", "reason": "download_date: is not a date in YYYY-MM-DD form",
                                  "record": json.dumps(make_event(2, download_date="7-Jan-18"))}])
    everything = _run("list")
    assert api_key in everything and batch_key in everything
    assert "age: must be >= 13" in everything and "download_date" in everything
    assert "Test Person" not in everything  # the listing never prints personal fields
    only_api = _run("list", "--source", "api", "--date", DAY)
    assert api_key in only_api and batch_key not in only_api
    assert "no rejected records" in _run("list", "--source", "stream")
    assert "YYYY-MM-DD" in _run("list", "--date", "5-Mar-24", ok=False)

    shown = [json.loads(line) for line in _run("show", batch_key).splitlines()]
    assert shown[0]["field"] == "download_date" and shown[0]["record"]["download_date"] == "7-Jan-18"
    report("dead letters listed and shown", objects=2, sources="api,batch")


def test_replay_direct_sends_fixed_records_once_with_stable_ids(s3, provisioned, appdata_env, tmp_path):
    kinesis = provisioned["kinesis"].get_client()
    bad = [make_event(10, day=DAY, age=7), make_event(11, day=DAY, rating=9.5)]
    key = put_dead_letter(s3, appdata_env.bucket, "stream", DAY, "shard-0-1-2",
                          [{"field": "age", "reason": "age: must be >= 13", "record": bad[0], "shard_id": "shardId-0"},
                           {"field": "rating", "reason": "rating: must be <= 5", "record": bad[1]}])

    # As they are, the records would only be rejected again: nothing is sent, the letter stays.
    refused = _run("replay", key, "--direct", ok=False)
    assert "still invalid" in refused and "age" in refused and "rating" in refused
    assert _kinesis_records(kinesis, appdata_env.stream) == []

    # The user edits what `show` printed and replays the fixed file.
    fixed = tmp_path / "fixed.jsonl"
    lines = [json.loads(line) for line in _run("show", key).splitlines()]
    lines[0]["record"]["age"] = 17
    lines[1]["record"]["rating"] = 4.5
    fixed.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = _run("replay", key, "--fixed", str(fixed), "--direct")
    assert "replayed 2 record(s)" in out and "rejected/_replayed/stream/" in out

    sent = _kinesis_records(kinesis, appdata_env.stream)
    assert [pk for pk, _ in sent] == [str(bad[0]["user_id"]), str(bad[1]["user_id"])]
    assert [r["age"] for _, r in sent] == [17, 20 + 11 % 50]
    expected_ids = [schema.derive_event_id({**bad[0], "age": 17}), schema.derive_event_id({**bad[1], "rating": 4.5})]
    assert [r["event_id"] for _, r in sent] == expected_ids

    # Replayed once only: the letter moved, a second replay refuses, the listing is empty.
    assert "already replayed" in _run("replay", key, "--fixed", str(fixed), "--direct", ok=False)
    assert "no rejected records" in _run("list")
    assert len(_kinesis_records(kinesis, appdata_env.stream)) == 2
    moved = s3.list_objects_v2(Bucket=appdata_env.bucket, Prefix="rejected/_replayed/")["Contents"]
    assert [o["Key"] for o in moved] == [key.replace("rejected/", "rejected/_replayed/", 1)]
    report("stream dead letter replayed to Kinesis", records=2, replays_refused=2, duplicates=0)


def test_batch_replay_lands_one_csv_per_day_and_is_idempotent(s3, appdata_env, tmp_path):
    bad = make_event(20, day=DAY, download_date="7-Jan-18", event_id="client-evt-20")
    letter = {"field": "download_date", "reason": "download_date: is not a date in YYYY-MM-DD form",
              "record": json.dumps(bad), "landing_key": f"landing/batch/download_date={DAY}/users.csv"}
    key = put_dead_letter(s3, appdata_env.bucket, "batch", DAY, "users", [letter])
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text(json.dumps({**bad, "download_date": DAY}) + "\n")

    out = _run("replay", key, "--fixed", str(fixed))
    assert f"landing/batch/download_date={DAY}/replay-" in out and DAY in out
    landing = s3.list_objects_v2(Bucket=appdata_env.bucket, Prefix=f"landing/batch/download_date={DAY}/")["Contents"]
    assert len(landing) == 1
    body = s3.get_object(Bucket=appdata_env.bucket, Key=landing[0]["Key"])["Body"].read()
    frame = pd.read_csv(io.BytesIO(body), dtype=str)
    assert list(frame.columns) == list(schema.EVENT_COLUMNS)
    assert frame["event_id"].tolist() == ["client-evt-20"] and frame["download_date"].tolist() == [DAY]
    assert schema.validate_records(frame).counts == {"valid": 1, "rejected": 0}

    # Re-running the day rejects the client's original row again; it is not listed as new work,
    # and replaying the same fix again rewrites the same landing object (no second copy).
    key = put_dead_letter(s3, appdata_env.bucket, "batch", DAY, "users", [letter])
    assert "no rejected records" in _run("list", "--source", "batch")
    _run("replay", key, "--fixed", str(fixed))
    again = s3.list_objects_v2(Bucket=appdata_env.bucket, Prefix=f"landing/batch/download_date={DAY}/")["Contents"]
    assert [o["Key"] for o in again] == [landing[0]["Key"]]
    report("batch dead letter replayed to landing", records=1, replays=2, landing_objects=1)


def test_replay_refuses_a_conflict_a_non_utf8_file_and_reads_a_dead_letter_of_deep_json(s3, appdata_env, tmp_path):
    from appdata.contract import deadletters
    from appdata.reliability.deadletters import DeadLetterError, prepare_records, read_fixed_file

    first = make_event(1, event_id="evt-1")
    with pytest.raises(DeadLetterError, match="record 2: event_id: already accepted with other content"):
        prepare_records([first, {**first, "age": 50}])
    assert len(prepare_records([first, dict(first)])) == 2  # an identical repeat is no conflict

    latin = tmp_path / "fixed.jsonl"
    latin.write_bytes(json.dumps(make_event(2)).encode() + b"\n" + '{"name": "José"}'.encode("latin-1") + b"\n")
    with pytest.raises(DeadLetterError, match=r"fixed.jsonl:2: not UTF-8 text"):
        read_fixed_file(str(latin))

    deep = "[" * 50_000 + "]" * 50_000  # what the drain keeps of a record that is no JSON object
    key = put_dead_letter(s3, appdata_env.bucket, "stream", DAY, "shard-deep",
                          [{"field": "record", "reason": "record: is not a JSON object", "record": deep}])
    (letter,) = deadletters.parse(key, s3.get_object(Bucket=appdata_env.bucket, Key=key)["Body"].read())
    assert letter.record == {"_raw": deep} and letter.field == "record"
    assert key in _run("list")


def test_replay_through_the_api_finds_the_local_stacks_key_file(s3, provisioned, appdata_env, tmp_path, monkeypatch):
    """Beside `appdata up` no APPDATA_API_KEYS is set: the key comes from $APPDATA_HOME/api-key."""
    from appdata_tests.support.api import LocalApi

    kinesis = provisioned["kinesis"].get_client()
    bad = make_event(30, day=DAY, age=7)
    key = put_dead_letter(s3, appdata_env.bucket, "api", DAY, "req-30",
                          [{"field": "age", "reason": "age: must be >= 13", "record": bad}])
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text(json.dumps({**bad, "age": 30}) + "\n")
    monkeypatch.delenv("APPDATA_API_KEYS")
    assert "no API key" in _run("replay", key, "--fixed", str(fixed), ok=False)  # neither variable nor file

    appdata_env.home.mkdir(parents=True, exist_ok=True)
    appdata_env.api_key_file.write_text("key-from-the-file\n")
    api = LocalApi(appdata_env, "key-from-the-file")
    try:
        monkeypatch.setenv("APPDATA_API_URL", api.url)
        out = _run("replay", key, "--fixed", str(fixed))
    finally:
        api.stop()
    assert "replayed 1 record(s)" in out
    assert [r["age"] for _, r in _kinesis_records(kinesis, appdata_env.stream)] == [30]
