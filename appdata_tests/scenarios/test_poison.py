"""Poison never takes its neighbours down: every kind of record a producer or a hostile client
can send sits between valid records, straight in Kinesis (drained by the sensor's consumer runs,
the first of which fails on a sink that is down and leaves its range pending for the next) and
through the API (drained by `appdata drain`, from the checkpoint the runs left). Every valid
record reaches every sink once, every poison is a dead letter with its reason, and the
reconciliation against the stream is green."""

from __future__ import annotations

import json
import os

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from appdata.api.app import create_app
from appdata.config import Settings
from appdata.contract import deadletters, layout, schema
from appdata.definitions import build_definitions
from appdata.lake import tables
from appdata.local.provision import provision
from appdata.defs.resources import build_resources
from appdata.defs.stream.drain import SHARD_TAG, WAREHOUSE_ASSET
from appdata.defs.stream.sensor import ATTEMPT_TAG, plan_requests, retry_delay
from appdata.warehouse.loader import read_frame
from appdata_tests.support.events import make_event
from appdata_tests.support.reliability import report
from appdata_tests.support.cli import run_cli
from appdata_tests.support.stream import dynamo_items, lake_state, lease_table, until_caught_up

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

DAY = "2024-06-01"
REFUSED_APP = "Refused by the warehouse"  # valid by the contract, refused by a CHECK of the test's warehouse


def poisons(n: int) -> list[tuple[str, bytes, str]]:
    """(kind, raw Kinesis data, what the dead letter's reason must say), numbered from `n`."""
    def raw(**overrides) -> bytes:
        return json.dumps(make_event(n, day=DAY, **overrides)).encode()

    deep = b'{"app": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    no_id = {k: v for k, v in make_event(n + 4, day=DAY).items()}
    return [
        ("oversize event_id", raw(event_id="e" * 1_100), "event_id: is longer than 128 characters"),
        ("record over 400 KB", raw(app="x" * 450_000), "app: is longer than 1024 characters"),
        ("NUL in a string", raw(name="Ann\x00"), "name: contains a NUL character"),
        ("Infinity, no event_id", json.dumps({**no_id, "rating": "__INF__"}).replace('"__INF__"', "Infinity").encode(),
         "rating: "),
        ("4,000-digit integer, no event_id",
         json.dumps({**no_id, "app": "Digits", "reviews": "__BIG__"}).replace('"__BIG__"', "9" * 4_000).encode(),
         "reviews: "),
        ("2^53 + 1", raw(user_id=2**53 + 1), "user_id: must be <= 9007199254740991"),
        ("nested 10,000 deep", deep, "undecodable record: nested too deeply"),
        ("not UTF-8", b"\xff\xfe{not json", "undecodable record"),
        ("date with trailing text", raw(download_date=f"{DAY}T25:00"), "download_date: is not a date"),
        ("a sink refuses it", raw(app=REFUSED_APP), "the warehouse refused the row"),
    ]


@pytest.fixture()
def world(appdata_env, postgres_url, monkeypatch):
    """The test's names on the emulator and a PostgreSQL warehouse that refuses one valid app name."""
    monkeypatch.setenv("APPDATA_WAREHOUSE_URL", postgres_url)
    settings = Settings.from_env()
    resources = build_resources(settings)
    provision(resources)
    engine = resources["warehouse"].get_engine()
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER TABLE downloads_stream ADD CONSTRAINT refuses CHECK (app <> '{REFUSED_APP}')")
    yield settings, resources, engine
    engine.dispose()


def _interleave(n: int) -> tuple[list[bytes], list[dict], list[tuple[str, str]]]:
    """Three valid records before each poison: (data of every record, the valid ones, (kind, reason))."""
    data, valid, expected = [], [], []
    for k, (kind, poison, reason) in enumerate(poisons(n + 1_000)):
        for i in range(3):
            record = make_event(n + 10 * k + i, day=DAY)
            valid.append(record)
            data.append(json.dumps(record).encode())
        data.append(poison)
        expected.append((kind, reason))
    conflict = {**valid[0], "event_id": schema.derive_event_id(valid[0]), "app": "Same id, other content"}
    data.append(json.dumps(conflict).encode())
    expected.append(("conflicting duplicate", schema.CONFLICT))
    return data, valid, expected


def _stream_letters(s3, bucket: str) -> list[dict]:
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=layout.rejected_prefix("stream")) for o in page.get("Contents", [])]
    return [letter for key in keys for letter in
            deadletters.parse(key, s3.get_object(Bucket=bucket, Key=key)["Body"].read())]


def _assert_every_sink_holds_once(resources, engine, valid_ids: set[str], *, lake_once: bool) -> None:
    s3, bucket = resources["s3"].get_client(), resources["s3"].bucket
    lake = [line for lines in lake_state(s3, bucket).values() for line in lines]
    assert {line["event_id"] for line in lake} == valid_ids
    if lake_once:
        assert len(lake) == len(valid_ids)
    items = [i for i in dynamo_items(resources["dynamodb"].get_client(), resources["dynamodb"].table_name)
             if i["sk"]["S"].startswith("DL#")]
    assert sorted(i["sk"]["S"].split("#", 2)[2] for i in items) == sorted(valid_ids)
    rows = read_frame(engine, "SELECT event_id, app FROM downloads_stream")
    assert sorted(rows["event_id"]) == sorted(valid_ids)
    assert REFUSED_APP not in set(rows["app"]) and "Same id, other content" not in set(rows["app"])


def test_every_poison_between_valid_records_is_dead_lettered_and_its_neighbours_delivered(world):
    settings, resources, engine = world
    kinesis = resources["kinesis"].get_client()
    s3, bucket = resources["s3"].get_client(), resources["s3"].bucket

    # 1. Straight into Kinesis, drained by the sensor's consumer runs; the first meets DynamoDB down.
    data, valid, expected = _interleave(0)
    response = kinesis.put_records(StreamName=settings.stream, Records=[
        {"Data": d, "PartitionKey": "p"} for d in data])
    assert response["FailedRecordCount"] == 0
    shard = response["Records"][0]["ShardId"]
    put_range = (response["Records"][0]["SequenceNumber"], response["Records"][-1]["SequenceNumber"])
    job = build_definitions().resolve_job_def("stream_drain_job")
    dynamodb = resources["dynamodb"].get_client()
    leases = lease_table(resources)
    with dg.instance_for_test() as instance:
        (request,), _ = plan_requests(kinesis, leases, instance)
        dynamodb.delete_table(TableName=settings.table)
        dynamodb.get_waiter("table_not_exists").wait(TableName=settings.table)
        failed = job.execute_in_process(instance=instance, run_config=until_caught_up(request.run_config),
                                        tags=request.tags, raise_on_error=False)
        assert not failed.success
        # The run gave up on the range after its attempts: left pending, nothing checkpointed past it.
        lease = leases.get(shard)
        assert (lease.pending, lease.checkpoint, lease.owner) == (put_range, None, None)
        provision(resources)
        ended_at = instance.get_run_record_by_id(failed.run_id).end_time
        early, notes = plan_requests(kinesis, leases, instance, now=ended_at + retry_delay(1) - 1)
        assert early == [] and any("next consumer in" in note for _, note in notes), notes
        (retry,), _ = plan_requests(kinesis, leases, instance, now=ended_at + retry_delay(1))
        assert (retry.tags[ATTEMPT_TAG], retry.tags[SHARD_TAG]) == ("2", request.tags[SHARD_TAG])
        redone = job.execute_in_process(instance=instance, run_config=until_caught_up(retry.run_config),
                                        tags=retry.tags)
        assert redone.success
        # It drained exactly the pending range first, then found nothing more.
        (materialized,) = [m.materialization.metadata for m in redone.get_asset_materialization_events()
                           if m.asset_key == WAREHOUSE_ASSET]
        assert (materialized["sequence_range"].value, materialized["ranges"].value) == ("-".join(put_range), 1)
        assert (leases.get(shard).pending, leases.get(shard).checkpoint) == (None, put_range[1])

    valid_ids = {schema.derive_event_id(r) for r in valid}
    _assert_every_sink_holds_once(resources, engine, valid_ids, lake_once=True)
    # The run committed the lake table too: each valid event once, the refused one not at all.
    table_ids = tables.scan(resources["lake_table"].open(), columns=("event_id",)).column("event_id").to_pylist()
    assert sorted(table_ids) == sorted(valid_ids)
    letters = _stream_letters(s3, bucket)
    assert len(letters) == len(expected)
    for letter, (kind, reason) in zip(sorted(letters, key=lambda d: int(d.context["sequence_number"])), expected):
        assert reason in letter.reason, (kind, letter.reason)
    (refused,) = [letter for letter in letters if letter.record.get("app") == REFUSED_APP]
    assert refused.field == "record" and "refuses" in refused.reason  # the constraint's own words

    # 2. Through the API: each poison is refused naming the record and the field, its neighbours
    # accepted (207); a body that cannot be read at all is a 4xx naming the body.
    api_valid = [make_event(500 + i, day=DAY) for i in range(6)]
    body = [api_valid[0], make_event(600, day=DAY, event_id="e" * 1_100), api_valid[1],
            make_event(601, day=DAY, name="Ann\x00"), api_valid[2], make_event(602, day=DAY, user_id=2**53 + 1),
            api_valid[3], {**api_valid[0], "event_id": schema.derive_event_id(api_valid[0]), "app": "Same id, other content"},
            api_valid[4],
            make_event(603, day=DAY, app=REFUSED_APP), api_valid[5]]
    key = {"x-api-key": os.environ["APPDATA_API_KEYS"]}
    with TestClient(create_app(settings, put_base_delay=0.01)) as client:
        answer = client.post("/v1/downloads", json=body, headers=key)
        assert answer.status_code == 207, answer.text
        assert [(r["index"], r["field"]) for r in answer.json()["rejected"]] == [
            (1, "event_id"), (3, "name"), (5, "user_id"), (7, "event_id")]
        for poison in (b"\xff\xfe", b'{"records": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"):
            unreadable = client.post("/v1/downloads", content=poison, headers={**key, "content-type": "application/json"})
            assert (unreadable.status_code, unreadable.json()["field"]) == (400, "body"), unreadable.text
        for poison, field in ((b'[{"rating": Infinity}]', "rating"), (b'{"reviews": ' + b"9" * 4_400 + b"}", "reviews")):
            alone = client.post("/v1/downloads", content=poison, headers={**key, "content-type": "application/json"})
            assert alone.status_code == 207 and alone.json()["accepted"] == 0, alone.text
            assert field in alone.json()["rejected"][0]["reason"], alone.text
    out = run_cli("drain")
    assert "not delivered" not in out
    # From the checkpoint the runs left: only the 7 records the API accepted (6 valid, 1 the warehouse refuses).
    assert "drained 7 records in 1 range(s)" in out, out
    valid_ids |= {schema.derive_event_id(r) for r in api_valid}
    _assert_every_sink_holds_once(resources, engine, valid_ids, lake_once=True)
    letters_now = _stream_letters(s3, bucket)
    assert len(letters_now) == len(expected) + 1
    refused_twice = [letter for letter in letters_now if letter.record.get("app") == REFUSED_APP]
    assert all("the warehouse refused the row" in d.reason for d in refused_twice)
    assert len(refused_twice) == len({d.context["sequence_number"] for d in refused_twice}) == 2  # one per part
    # The download day, and today: the undecodable records are filed under the day they arrived.
    assert "stream: 2 day(s) reconciled" in run_cli("reconcile", "--stream", "--grace", "0")
    report("poison isolation", poison_kinds=len(expected), valid_records=len(valid_ids), dead_letters=len(letters),
           failed_run_then_retried=True, reconciled=True)
