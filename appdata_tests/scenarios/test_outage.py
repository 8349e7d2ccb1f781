"""Outage: the emulator (a separate server process, not the session's) is killed while a drain
run's shard consumer writes; the run fails with a clear error; after the emulator is back (moto
keeps state in memory, so: re-provisioned, the lease table empty, records re-sent by the
producer) the next consumer run drains the shard from its start, checkpoints it and reconciles.

The kill point is deterministic: this emulator holds the drain's first DynamoDB BatchWriteItem
(after the lake object is written), says so on stdout and waits; the test kills it right there.
No sleep decides whether the run was caught mid-way."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import threading
import uuid

import dagster as dg
import pytest

from appdata.config import AwsEndpoints, Settings
from appdata.local.emulator import free_port, wait_until_up
from appdata.local.provision import provision
from appdata.reliability.reconcile import reconcile_stream_day
from appdata.defs.resources import build_resources
from appdata.contract.schema import derive_event_id
from appdata.defs.stream.drain import drain_run_config, kinesis_downloads, stream_drain, stream_drain_job
from appdata_tests.support.events import make_event
from appdata_tests.support.reliability import report
from appdata_tests.support.stream import lease_table

pytestmark = [pytest.mark.reliability, pytest.mark.emulator]

DAY = "2023-06-01"


# One emulator process serving every service (the test points every service's endpoint at it),
# except that the first DynamoDB BatchWriteItem request is held: the emulator prints one line and
# blocks (it serves one request at a time) until the test kills it.
HOLDING_EMULATOR = """
import sys
from appdata.local.emulator import make_emulator

server = make_emulator(port=int(sys.argv[1]))
serve = server.app

def app(environ, start_response):
    if environ.get("HTTP_X_AMZ_TARGET", "").endswith(".BatchWriteItem"):
        print("holding BatchWriteItem", flush=True)
        sys.stdin.read()
    return serve(environ, start_response)

server.app = app
server.serve_forever()
"""


def _start_emulator(port: int) -> subprocess.Popen:
    """`appdata emulator` on the test's configuration: one process serving every service at `port`."""
    proc = subprocess.Popen([sys.executable, "-m", "appdata.cli", "emulator"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_up(f"http://127.0.0.1:{port}")
    return proc


def _put_all(resources, stream: str, records: list[dict]) -> tuple[str, str, str]:
    kinesis = resources["kinesis"].get_client()
    seqs = []
    for start in range(0, len(records), 500):
        response = kinesis.put_records(StreamName=stream, Records=[
            {"Data": json.dumps(r).encode(), "PartitionKey": str(r["user_id"])} for r in records[start:start + 500]])
        assert response["FailedRecordCount"] == 0
        seqs += [(r["ShardId"], r["SequenceNumber"]) for r in response["Records"]]
    return seqs[0][0], seqs[0][1], seqs[-1][1]


def test_emulator_killed_mid_run_fails_clearly_and_a_retry_after_it_is_back_succeeds(tmp_path, monkeypatch):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    suffix = uuid.uuid4().hex[:8]
    for key, value in {"APPDATA_HOME": str(tmp_path / "home"), **AwsEndpoints.everything_at(endpoint).environment(),
                       "APPDATA_BUCKET": f"outage-{suffix}", "APPDATA_STREAM": f"outage-{suffix}",
                       "APPDATA_TABLE": f"outage-{suffix}", "APPDATA_AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "APPDATA_WAREHOUSE_URL"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings.from_env()
    resources = build_resources(settings)
    records = [make_event(50_000 + i, day=DAY) for i in range(200)]
    defs = dg.Definitions(assets=[kinesis_downloads, stream_drain], jobs=[stream_drain_job], resources=resources)
    job = defs.resolve_job_def("stream_drain_job")
    s3 = resources["s3"].get_client()

    emulator = subprocess.Popen([sys.executable, "-c", HOLDING_EMULATOR, str(port)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    try:
        wait_until_up(endpoint)
        provision(resources)
        shard, _, _ = _put_all(resources, settings.stream, records)
        outcome: dict = {}

        def run() -> None:
            outcome["result"] = job.execute_in_process(
                run_config=drain_run_config(settings.stream, shard, stop_when_caught_up=True), raise_on_error=False)

        worker = threading.Thread(target=run)
        worker.start()
        # Wait for the drain to reach its first DynamoDB write (the lake object is written by then)...
        while worker.is_alive() and not select.select([emulator.stdout], [], [], 0.1)[0]:
            pass
        held = emulator.stdout.readline() if select.select([emulator.stdout], [], [], 0)[0] else ""
        assert held == "holding BatchWriteItem\n", f"the drain never reached DynamoDB: {outcome}"
        # ... and take the emulator away under it.
        emulator.send_signal(signal.SIGKILL)
        emulator.wait()
        worker.join(timeout=300)
        result = outcome["result"]
        assert not result.success
        error = result.failure_data_for_node("stream_drain").error
        message = error.message + "".join(c.message for c in ([error.cause] if error.cause else []))
        assert "Could not connect to the endpoint URL" in message and endpoint in message, message

        # Back: a fresh emulator (empty, moto is in-memory), re-provisioned; the producer re-sends.
        emulator = _start_emulator(port)
        provision(resources)
        shard, _, last = _put_all(resources, settings.stream, records)
        retry = job.execute_in_process(run_config=drain_run_config(settings.stream, shard, stop_when_caught_up=True))
        assert retry.success
        lease = lease_table(resources).get(shard)
        assert (lease.checkpoint, lease.pending, lease.owner) == (last, None, None)
        engine = resources["warehouse"].get_engine()
        day = reconcile_stream_day(s3=s3, bucket=settings.bucket, dynamodb=resources["dynamodb"].get_client(),
                                   table=settings.table, engine=engine, day=DAY,
                                   accepted=[derive_event_id(r) for r in records])
        engine.dispose()
        assert day.ok, day.describe()
        report("outage", records=len(records), failed_with="EndpointConnectionError", retry="succeeded",
               lost=0, duplicated=0)
    finally:
        if emulator.poll() is None:
            emulator.terminate()
            emulator.wait(timeout=10)
