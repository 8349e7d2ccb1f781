"""Forgetting a user on the emulator: one who is in the batch, the stream, the dead letters, the
lake table (and its older snapshots), the raw archive, DynamoDB and the recommendations. After
`appdata forget` no place holds a trace; the user's events sent again, a replay of an old dead
letter and a backfill of their days bring nothing back; the proof stays green."""

from __future__ import annotations

import json

import sqlalchemy as sa

from appdata import aws
from appdata.defs.resources import build_resources
from appdata.privacy import log
from appdata.stream.table_writer import sync_stream_table
from appdata_tests.support.cli import run_cli
from appdata_tests.support.events import make_event
from appdata_tests.support.stream import drain_all, forgotten_users, lease_table, put

DAYS = ("2020-01-01", "2020-01-02")


def user_rows(engine, user_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: conn.execute(sa.text(f"SELECT COUNT(*) FROM {name} WHERE user_id = :u"),
                                   {"u": user_id}).scalar_one() for name in ("downloads_batch", "downloads_stream")}


def test_a_forgotten_user_leaves_no_trace_and_nothing_brings_them_back(batch_world):
    from appdata.analytics.recommend import refresh_all_recommendations

    batch_world.load(*DAYS)
    resources = build_resources(batch_world.settings)
    s3, bucket = resources["s3"].get_client(), resources["s3"].bucket
    kinesis, stream = resources["kinesis"].get_client(), resources["kinesis"].stream_name
    dynamodb = resources["dynamodb"].get_client()
    with resources["warehouse"].connect() as engine:
        with engine.connect() as conn:
            user_id, other = [row[0] for row in conn.exec_driver_sql(
                "SELECT user_id FROM downloads_batch GROUP BY user_id ORDER BY COUNT(*) DESC, user_id LIMIT 2")]
        mine = [make_event(n, day=DAYS[n % 2], user_id=user_id, with_id=True) for n in range(6)]
        theirs = [make_event(100 + n, day=DAYS[0], user_id=other, with_id=True) for n in range(4)]
        poison = {**make_event(50, day=DAYS[0], user_id=user_id, with_id=True), "age": 7}
        put(kinesis, stream, mine + theirs + [poison])
        drain_all(resources, engine)
        sync_stream_table(resources["lake_table"].open, kinesis, stream, lease_table(resources),
                          forgotten_users(resources))
        refresh_all_recommendations(engine, s3, bucket, dynamodb, resources["dynamodb"].table_name)
        assert user_rows(engine, user_id)["downloads_stream"] == 6 and user_rows(engine, user_id)["downloads_batch"]

    # Everywhere before: the proof names each place.
    before = run_cli("forget", "--verify", str(user_id), code=1)
    for place in ("s3 lake/stream", "s3 landing/batch", "s3 curated/batch", "s3 rejected", "lake table files",
                  "dynamodb", "warehouse downloads_batch", "warehouse downloads_stream"):
        assert place in before, (place, before)

    out = run_cli("forget", str(user_id), "--by", "dpo@example.com")
    assert "no trace left" in out
    (request,) = log.all_requests(s3, bucket)
    assert request.status == "done" and request.traces == {} and request.requested_by == "dpo@example.com"
    logged = json.loads(s3.get_object(Bucket=bucket, Key=f"privacy/requests/{request.request_id}.json")["Body"].read())
    assert "user_id" not in logged and str(user_id) not in {str(v) for v in logged.values()}  # no personal data
    assert "no trace in any place" in run_cli("forget", "--verify", str(user_id))

    # Nothing brings them back: their events again (a replay into the stream), a backfill of their days.
    put(kinesis, stream, mine[:3] + [poison] + [make_event(200, day=DAYS[1], user_id=user_id, with_id=True)])
    with resources["warehouse"].connect() as engine:
        results = drain_all(resources, engine)
        sync_stream_table(resources["lake_table"].open, kinesis, stream, lease_table(resources),
                          forgotten_users(resources))
        assert sum(r.forgotten for r in results) == 5
        batch_world.load(*DAYS)  # the client drops the same days again, the user's rows included
        assert user_rows(engine, user_id) == {"downloads_batch": 0, "downloads_stream": 0}
        assert user_rows(engine, other)["downloads_stream"] == 4  # everyone else stays
    assert "no trace in any place" in run_cli("forget", "--verify", str(user_id))
    # Reconciliation knows the user is in no sink by design (their records are still on the stream).
    run_cli("reconcile", "--grace", "0")


def test_the_admin_route_files_a_request_and_the_ingest_door_then_refuses_the_user(provisioned, appdata_env,
                                                                                   monkeypatch):
    import os

    from fastapi.testclient import TestClient

    from appdata.api.app import create_app
    from appdata.contract import layout

    monkeypatch.setenv("APPDATA_ADMIN_API_KEYS", "admin-secret")
    s3, bucket = provisioned["s3"].get_client(), provisioned["s3"].bucket
    key = {"x-api-key": os.environ["APPDATA_API_KEYS"]}
    with TestClient(create_app(appdata_env)) as client:
        assert client.post("/v1/admin/erasure-requests", json={"user_id": 100_001}, headers=key).status_code == 401
        wrong = client.post("/v1/admin/erasure-requests", json={"user_id": 100_001},
                            headers={"x-admin-key": os.environ["APPDATA_API_KEYS"]})
        assert wrong.status_code == 403 and wrong.json()["field"] == "x-admin-key"
        filed = client.post("/v1/admin/erasure-requests", json={"user_id": 100_001},
                            headers={"x-admin-key": "admin-secret"})
        assert filed.status_code == 202, filed.text
        request_id = filed.json()["request_id"]
        status = client.get(f"/v1/admin/erasure-requests/{request_id}", headers={"x-admin-key": "admin-secret"})
        assert status.json()["status"] == "pending"

        body = [make_event(0, user_id=100_001), make_event(1, user_id=100_002), {**make_event(2, user_id=100_001),
                                                                               "age": 7}]
        answer = client.post("/v1/downloads", json=body, headers=key)
    assert answer.status_code == 207 and answer.json()["accepted"] == 1
    assert [(r["index"], r["field"], r["reason"]) for r in answer.json()["rejected"]] == [
        (0, "user_id", "the user asked to be forgotten"), (2, "user_id", "the user asked to be forgotten")]
    assert list(aws.list_keys(s3, bucket, layout.REJECTED)) == []  # nothing of theirs kept, not even the invalid one


def test_the_job_carries_out_a_filed_request_and_its_check_proves_it(provisioned):
    import dagster as dg

    from appdata.defs.privacy import erasure_request_sensor, erasure_requests

    s3, bucket = provisioned["s3"].get_client(), provisioned["s3"].bucket
    kinesis = provisioned["kinesis"].get_client()
    put(kinesis, provisioned["kinesis"].stream_name,
        [make_event(n, day=DAYS[0], user_id=100_001 + n % 2, with_id=True) for n in range(8)])
    with provisioned["warehouse"].connect() as engine:
        drain_all(provisioned, engine)
    request = log.file_request(s3, bucket, 100_001, "test")
    with dg.build_sensor_context(resources=provisioned) as context:
        run = erasure_request_sensor(context)
    assert run.run_key.startswith(request.request_id + "@")

    result = dg.materialize([erasure_requests], resources=provisioned)
    (check,) = result.get_asset_check_evaluations()
    assert check.passed, check.description
    assert log.load(s3, bucket, request.request_id).status == "done"
    assert log.load(s3, bucket, request.request_id).removed["dynamodb items"] == 4
    with dg.build_sensor_context(resources=provisioned) as context:
        assert isinstance(erasure_request_sensor(context), dg.SkipReason)

    # A trace put back behind the pipeline's back (an old backup restored into the raw archive) turns it red.
    s3.put_object(Bucket=bucket, Key="lake/stream/download_date=2020-01-01/hour=00/restored.jsonl",
                  Body=b'{"event_id": "x", "user_id": 100001}\n')
    (check,) = dg.materialize([erasure_requests], resources=provisioned).get_asset_check_evaluations()
    assert not check.passed and request.request_id in check.description and "s3 lake/stream 1" in check.description
    assert "100001" not in check.description  # it names the request, never the user


def test_a_user_never_held_costs_no_history_and_a_request_in_progress_is_left_to_its_run(provisioned):
    import datetime as dt

    from appdata.defs.privacy import erasure_places
    from appdata.privacy import requests

    s3, bucket = provisioned["s3"].get_client(), provisioned["s3"].bucket
    table = provisioned["lake_table"].open()
    kinesis = provisioned["kinesis"].get_client()
    for n in range(3):  # three commits: three snapshots of history
        put(kinesis, provisioned["kinesis"].stream_name, [make_event(n, day=DAYS[0], with_id=True)])
        with provisioned["warehouse"].connect() as engine:
            drain_all(provisioned, engine)
        sync_stream_table(provisioned["lake_table"].open, kinesis, provisioned["kinesis"].stream_name,
                          lease_table(provisioned), forgotten_users(provisioned))
    table.refresh()
    history = len(table.snapshots())
    assert history >= 3

    request = log.file_request(s3, bucket, 987_654_321, "test")
    now = dt.datetime.now(dt.timezone.utc)
    assert log.waiting(log.load(s3, bucket, request.request_id), now)
    with provisioned["warehouse"].connect() as engine:
        outcome = requests.carry_out(request.request_id, erasure_places(
            provisioned["s3"], provisioned["dynamodb"], provisioned["lake_table"], engine))
    assert (outcome.status, outcome.removed) == ("done", {})
    table.refresh()
    assert len(table.snapshots()) == history  # time travel kept: nothing of theirs was there

    busy = log.file_request(s3, bucket, 100_001, "test")
    busy.status, busy.started_at = "in_progress", now.isoformat()
    log.save(s3, bucket, busy)
    assert not log.waiting(log.load(s3, bucket, busy.request_id), now)  # the sensor leaves it to its run
    assert log.waiting(log.load(s3, bucket, busy.request_id), now + log.IN_PROGRESS_FOR * 2)  # a run that died
