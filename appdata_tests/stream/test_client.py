"""The stream client and the demo through the real ingest API (uvicorn on a free port, the
emulator behind it): `appdata send`, the schedule's never-resending cursor, a down API
skipped, and the demo's counts reconciling."""

from __future__ import annotations

import json
import os
import threading
import time

import dagster as dg
import httpx
import pandas as pd
import pytest
from click.testing import CliRunner

from appdata.defs.resources import build_resources
from appdata.local.emulator import free_port
from appdata.stream.client import send_next_batch
from appdata.local.stream_demo import run_stream_demo
from appdata_tests.support.events import todays_event
from appdata_tests.support.stream import drain_all


@pytest.fixture()
def api_url(provisioned, appdata_env):
    import uvicorn

    from appdata.api.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(appdata_env), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def write_csv(path, n: int, bad: set[int] = frozenset()) -> None:
    rows = [todays_event(i) for i in range(n)]
    for i in bad:
        rows[i]["age"] = None
    pd.DataFrame(rows).to_csv(path, index=False)


def test_send_command_posts_csv_and_prints_summary(api_url, monkeypatch, tmp_path, provisioned):
    from appdata.cli import main

    csv_path = tmp_path / "clients.csv"
    write_csv(csv_path, 30, bad={4, 9})
    monkeypatch.setenv("APPDATA_API_URL", api_url)
    result = CliRunner().invoke(main, ["send", str(csv_path), "--batch-size", "8", "--rate", "1000"])
    assert result.exit_code == 0, result.output
    assert "accepted 28, rejected 2" in result.output
    assert "row 5: age" in result.output and "row 10: age" in result.output

    # and the drain puts every accepted event where the GET finds it
    drain_all(provisioned)
    key = {"x-api-key": os.environ["APPDATA_API_KEYS"]}
    answer = httpx.get(f"{api_url}/v1/users/100001/downloads", headers=key).json()
    expected = {todays_event(i)["event_id"] for i in range(30) if i % 7 == 0 and i not in (4, 9)}
    assert {d["event_id"] for d in answer["downloads"]} == expected


def test_schedule_cursor_never_resends(api_url, appdata_env, tmp_path):
    csv_path = tmp_path / "clients.csv"
    write_csv(csv_path, 25)
    cursor = tmp_path / "cursor.json"
    key = os.environ["APPDATA_API_KEYS"]
    sent = [send_next_batch(csv_path, cursor, api_url=api_url, key=key, batch_size=10) for _ in range(4)]
    assert [s.get("sent") for s in sent] == [10, 10, 5, 0]
    assert sent[-1]["status"] == "done"
    assert json.loads(cursor.read_text())["next_row"] == 25


def test_schedule_skips_when_api_is_down(appdata_env, monkeypatch):
    from appdata.sources.client_files import stream_csv_path
    from appdata.defs.stream.client_schedule import stream_client_every_minute

    path = stream_csv_path(appdata_env.client_dir)
    path.parent.mkdir(parents=True)
    write_csv(path, 3)
    monkeypatch.setenv("APPDATA_API_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    with dg.build_schedule_context(resources=build_resources()) as context:
        result = stream_client_every_minute(context)
    assert isinstance(result, dg.SkipReason) and "not answering" in result.skip_message


def test_demo_through_api_reconciles(api_url, appdata_env):
    report = run_stream_demo(appdata_env, n_events=120, invalid=10, repeated=15, api_url=api_url)
    assert report["reconciled"], report
    assert (report["accepted"], report["rejected"]) == (125, 10)
    assert report["lake_distinct_events"] == report["dynamodb_distinct_events"] == report["warehouse_rows"] == 110


def test_demo_straight_to_kinesis_reconciles(provisioned, appdata_env):
    report = run_stream_demo(appdata_env, n_events=80, invalid=8, repeated=10, via_api=False)
    assert report["reconciled"], report
    assert report["rejected"] == 8 and report["warehouse_rows"] == 72


def test_demo_reconciles_while_a_consumer_run_holds_the_shard(provisioned, appdata_env):
    """`appdata demo` beside a running `appdata up`: the daemon's consumer run holds the shard's
    lease and drains the demo's records; the demo must still count and reconcile them."""
    import math

    from appdata.stream.consumer import LEASE_SECONDS, ShardConsumer, stream_created
    from appdata.stream.drain import list_shards
    from appdata_tests.support.stream import consumer_sinks, lease_table

    kinesis, stream = provisioned["kinesis"].get_client(), appdata_env.stream
    (shard,) = [s["ShardId"] for s in list_shards(kinesis, stream)]
    leases = lease_table(provisioned)
    assert leases.acquire(shard, "daemon-run", LEASE_SECONDS) is not None  # held before the demo starts
    stop = threading.Event()
    running = ShardConsumer(kinesis=kinesis, stream=stream, shard_id=shard, parents=[], leases=leases,
                            owner="daemon-run", sinks=consumer_sinks(provisioned), created=stream_created(kinesis, stream),
                            clock=lambda: math.inf if stop.is_set() else time.time(), sleep=stop.wait)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    try:
        report = run_stream_demo(appdata_env, n_events=40, invalid=4, repeated=5, via_api=False)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert report["reconciled"], report


CLIENT_RUN = """
import json
from appdata.definitions import defs
result = defs.resolve_job_def("stream_client_job").execute_in_process()
print(json.dumps(result.output_for_node("post_next_client_batch")))
"""


def _client_csv(settings, n: int) -> list[dict]:
    from appdata.sources.client_files import stream_csv_path

    path = stream_csv_path(settings.client_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, n)
    return [todays_event(i) for i in range(n)]


def test_client_job_in_two_processes_sends_rows_1_100_then_101_200(api_url, appdata_env, monkeypatch):
    """The cursor's file identity is a content digest, so a new process continues where the last stopped."""
    import subprocess
    import sys

    rows = _client_csv(appdata_env, 250)
    monkeypatch.setenv("APPDATA_API_URL", api_url)
    outcomes = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", CLIENT_RUN], capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, PYTHONHASHSEED="random"))
        assert done.returncode == 0, done.stderr[-2000:]
        outcomes.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert [(o["first_row"], o["next_row"], o["accepted"]) for o in outcomes] == [(0, 100, 100), (100, 200, 100)]
    assert outcomes[0]["event_ids"] == [r["event_id"] for r in rows[:100]]
    assert outcomes[1]["event_ids"] == [r["event_id"] for r in rows[100:200]]


def test_delivery_check_turns_red_while_accepted_events_are_not_in_the_warehouse(api_url, appdata_env, provisioned):
    from appdata.definitions import build_definitions
    from appdata.sources.client_files import stream_csv_path
    from appdata.sources.client_files import stream_cursor_path, stream_ledger_path

    rows = _client_csv(appdata_env, 30)
    key = os.environ["APPDATA_API_KEYS"]
    send_next_batch(stream_csv_path(appdata_env.client_dir), stream_cursor_path(appdata_env.client_dir), api_url=api_url, key=key,
                    batch_size=30, ledger_path=stream_ledger_path(appdata_env.client_dir))
    job = build_definitions().resolve_job_def("stream_delivery_check_job")

    def check() -> dg.AssetCheckEvaluation:
        with dg.instance_for_test() as instance:
            result = job.execute_in_process(instance=instance)
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation

    fresh = check()  # just accepted: on its way, not late
    assert fresh.passed and fresh.metadata["pending"].value == 30 and fresh.metadata["due"].value == 0

    ledger = stream_ledger_path(appdata_env.client_dir)  # let the clock run: the entries are now an hour old
    ledger.write_text("".join(json.dumps({**json.loads(line), "at": time.time() - 3600}) + "\n"
                              for line in ledger.read_text().splitlines()))
    stalled = check()
    assert not stalled.passed
    assert stalled.metadata["missing"].value == 30 and "NOT in downloads_stream" in stalled.description
    assert set(stalled.metadata["missing_event_ids"].value) == {r["event_id"] for r in rows}

    drain_all(provisioned)
    drained = check()
    assert drained.passed and drained.metadata["delivered"].value == 30, drained.description
