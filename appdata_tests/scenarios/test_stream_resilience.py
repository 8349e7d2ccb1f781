"""The stream path under replays, crashes, load and log capture, on the real API (uvicorn),
the real emulator and the real drain: 0 lost, 0 duplicated in each sink, keys never logged."""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest
from click.testing import CliRunner

from appdata.reliability.reconcile import reconcile_stream_day
from appdata.stream.drain import drain_range
from appdata_tests.support.api import post
from appdata_tests.support.events import make_event
from appdata_tests.support.reliability import report, scale
from appdata_tests.support.stream import shard_ranges, split_range, stream_tail

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def sinks(module_env):
    from appdata.defs.resources import build_resources

    resources = build_resources(module_env)
    engine = resources["warehouse"].get_engine()
    yield {"s3": resources["s3"].get_client(), "kinesis": resources["kinesis"].get_client(),
           "dynamodb": resources["dynamodb"].get_client(), "engine": engine, "settings": module_env}
    engine.dispose()


def _drain(sinks, shard: str, first: str, last: str):
    settings = sinks["settings"]
    return drain_range(kinesis=sinks["kinesis"], stream=settings.stream, shard_id=shard, first_sequence=first,
                       last_sequence=last, s3=sinks["s3"], bucket=settings.bucket, dynamodb=sinks["dynamodb"],
                       table=settings.table, engine=sinks["engine"])


def _reconcile(sinks, day: str, accepted: set[str]):
    settings = sinks["settings"]
    return reconcile_stream_day(s3=sinks["s3"], bucket=settings.bucket, dynamodb=sinks["dynamodb"],
                                table=settings.table, engine=sinks["engine"], day=day, accepted=accepted)


def test_api_keys_never_appear_in_logs(local_api, caplog):
    wrong = "wrong-" + "k3y-" + os.urandom(8).hex()
    with caplog.at_level(logging.DEBUG):
        with httpx.Client(timeout=30) as client:
            ok = client.post(f"{local_api.url}/v1/downloads", headers={"x-api-key": local_api.key},
                             json=[make_event(1, day="2023-01-01"), make_event(2, day="2023-01-01", age=3)])
            refused = client.post(f"{local_api.url}/v1/downloads", headers={"x-api-key": wrong},
                                  json=[make_event(3, day="2023-01-01")])
            missing = client.post(f"{local_api.url}/v1/downloads", json=[make_event(4, day="2023-01-01")])
            client.get(f"{local_api.url}/v1/users/100002/downloads", headers={"x-api-key": local_api.key})
        logging.getLogger("appdata").debug("flush")
    assert (ok.status_code, refused.status_code, missing.status_code) == (207, 403, 401)
    text = caplog.text
    assert "/v1/downloads" in text  # the access log was captured: the check below means something
    assert local_api.key not in text and wrong not in text
    assert not [n for n in range(1, 5) if make_event(n)["name"] in text]  # nor a user's name from the bodies
    report("API keys not logged", requests=4, log_lines=len(caplog.records), keys_found=0)


def test_replay_through_the_api_sends_a_fixed_record_once(local_api, sinks, tmp_path, monkeypatch):
    from appdata.cli.reliability import rejected

    settings = sinks["settings"]
    monkeypatch.setenv("APPDATA_API_URL", local_api.url)
    day = "2023-02-01"
    status, body = post(local_api, [make_event(10, day=day), make_event(11, day=day, rating=7)])
    assert status == 207 and body["rejected"][0]["field"] == "rating"
    runner = CliRunner()
    listing = runner.invoke(rejected, ["list", "--source", "api", "--date", day]).output
    key = next(line.split()[2] for line in listing.splitlines() if line.startswith("api "))
    shown = [json.loads(line) for line in runner.invoke(rejected, ["show", key]).output.splitlines()]
    shown[0]["record"]["rating"] = 4.5
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text(json.dumps(shown[0]) + "\n")
    before = stream_tail(sinks["kinesis"], settings.stream)
    out = runner.invoke(rejected, ["replay", key, "--fixed", str(fixed)])
    assert out.exit_code == 0 and "replayed 1 record(s)" in out.output, out.output
    again = runner.invoke(rejected, ["replay", key, "--fixed", str(fixed)])
    assert again.exit_code != 0 and "already replayed" in again.output
    accepted = set(body["event_ids"])
    ranges = shard_ranges(sinks["kinesis"], settings.stream, after=before)
    assert sum(1 for _ in ranges) == 1
    for shard, first, last in shard_ranges(sinks["kinesis"], settings.stream):
        _drain(sinks, shard, first, last)
    # The dead letter's event_id (the API derived it on arrival) is kept: a replay is the same event.
    from appdata.contract.schema import derive_event_id

    kept = shown[0]["record"].get("event_id") or derive_event_id(shown[0]["record"])
    accepted.add(kept)
    result = _reconcile(sinks, day, accepted)
    assert result.ok, result.describe()
    report("dead letter replayed through the API", records=1, second_replay_refused=True)


def test_every_post_twice_and_every_drain_range_three_times(local_api, sinks):
    settings = sinks["settings"]
    day = "2023-03-01"
    total = scale(600, 5000)
    records = [make_event(1000 + i, day=day, age=5 if i % 25 == 0 else 30) for i in range(total)]
    before = stream_tail(sinks["kinesis"], settings.stream)
    accepted: set[str] = set()
    rejected = 0
    for start in range(0, total, 100):
        batch = records[start:start + 100]
        first = post(local_api, batch)
        second = post(local_api, batch)  # a client retrying the same POST
        assert first[0] in (200, 207) and first[1]["event_ids"] == second[1]["event_ids"]
        accepted |= set(first[1]["event_ids"])
        rejected += len(first[1]["rejected"])
    ranges = [r for shard, a, b in shard_ranges(sinks["kinesis"], settings.stream, after=before)
              for r in split_range(sinks["kinesis"], settings.stream, shard, a, b, parts=4)]
    for _ in range(3):
        for shard, first_seq, last_seq in ranges:
            _drain(sinks, shard, first_seq, last_seq)
    result = _reconcile(sinks, day, accepted)
    assert result.ok, result.describe()
    assert len(accepted) == total - rejected and rejected == total // 25
    assert result.counts == {"accepted": len(accepted), "lake": len(accepted), "dynamodb": len(accepted),
                             "downloads_stream": len(accepted)}
    report("replay", records=total, posts=2 * -(-total // 100), drain_ranges=len(ranges), drains_each=3,
           accepted=len(accepted), rejected=rejected, lost=0, duplicated=0)


KILLED = 86  # the exit code of a drain stopped at its kill point (a crash, not an error: no cleanup runs)

DRAIN_SCRIPT = """
import json, os, sys, time
import sqlalchemy as sa
from appdata.config import Settings
from appdata.defs.resources import build_resources
from appdata.stream.drain import drain_range

# Kill point chosen by the test: "<point>:<n>" = os._exit(%(killed)d) right after the n-th occurrence of <point>
# in this process (points: the botocore after-call events and SQLAlchemy hooks registered below). Apart from
# the one line telling the test where, nothing runs: no finally, no rollback, like a SIGKILL. Empty: run to the end.
KILL_AT = os.environ.get("APPDATA_TEST_KILL_AT", "")
counts = {}
started = time.monotonic()

def reached(point):
    counts[point] = counts.get(point, 0) + 1
    if KILL_AT == f"{point}:{counts[point]}":
        sys.stdout.write("killed " + json.dumps({"at": KILL_AT, "counts": counts,
                                                 "seconds": round(time.monotonic() - started, 2)}) + "\\n")
        sys.stdout.flush()
        os._exit(%(killed)d)

def after_call(event_name, http_response, **_):
    if http_response.status_code < 300:  # a call the service answered with success (a write: done)
        reached(event_name[len("after-call."):])

s = Settings.from_env(); r = build_resources(s); engine = r["warehouse"].get_engine()
kinesis, s3, dynamodb = r["kinesis"].get_client(), r["s3"].get_client(), r["dynamodb"].get_client()
kinesis.meta.events.register("after-call.kinesis.GetRecords", after_call)
s3.meta.events.register("after-call.s3.PutObject", after_call)
dynamodb.meta.events.register("after-call.dynamodb.BatchWriteItem", after_call)

@sa.event.listens_for(engine, "before_cursor_execute")
def before_statement(conn, cursor, statement, parameters, context, executemany):
    if statement.lstrip().upper().startswith("INSERT"):
        reached("warehouse.insert.before")

@sa.event.listens_for(engine, "after_cursor_execute")
def after_statement(conn, cursor, statement, parameters, context, executemany):
    if statement.lstrip().upper().startswith("INSERT"):
        reached("warehouse.insert.after")

do_commit = engine.dialect.do_commit
def commit_then_count(dbapi_connection):
    do_commit(dbapi_connection)
    reached("warehouse.commit.after")  # the DBAPI commit returned: the rows are durable
engine.dialect.do_commit = commit_then_count

result = drain_range(kinesis=kinesis, stream=s.stream, shard_id=sys.argv[1], first_sequence=sys.argv[2],
                     last_sequence=sys.argv[3], s3=s3, bucket=s.bucket, dynamodb=dynamodb, table=s.table,
                     engine=engine)
print("drained " + json.dumps({"counts": counts, "seconds": round(time.monotonic() - started, 2),
                               "warehouse_inserted": result.warehouse_inserted}), flush=True)
""" % {"killed": KILLED}


def _drain_process(shard: str, first: str, last: str, kill_at: str = "") -> tuple[int, dict, str]:
    """Run the drain in its own process, killed at `kill_at`; (exit code, its last report, stderr tail)."""
    env = dict(os.environ, APPDATA_TEST_KILL_AT=kill_at)
    proc = subprocess.run([sys.executable, "-c", DRAIN_SCRIPT, shard, first, last], capture_output=True,
                          text=True, timeout=300, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("killed ", "drained "))]
    said = json.loads(lines[-1].split(" ", 1)[1]) if lines else {}
    return proc.returncode, said, proc.stderr[-2000:]


def test_drain_killed_at_chosen_points_then_resumed_loses_and_doubles_nothing(local_api, sinks):
    """The drain is killed at points the test names (not after a sleep), in the order it writes:
    after the first lake object; after the first, middle and last DynamoDB batch; just before and
    just after the warehouse INSERT (uncommitted); just after its COMMIT (full run: also after reading
    the range, and after a quarter and three quarters of the batches). Each killed run leaves exactly
    the sinks its kill point implies, the next run resumes from there, the last completes them all."""
    settings = sinks["settings"]
    day = "2023-04-01"
    total = scale(1500, 4000)
    before = stream_tail(sinks["kinesis"], settings.stream)
    accepted: set[str] = set()
    for start in range(0, total, 500):
        status, body = post(local_api, [make_event(20_000 + i, day=day) for i in range(start, min(total, start + 500))])
        assert status == 200
        accepted |= set(body["event_ids"])
    assert len(accepted) == total
    ((shard, first, last),) = shard_ranges(sinks["kinesis"], settings.stream, after=before)
    batches = -(-total // 25)  # BatchWriteItem calls: the drain writes DynamoDB 25 items at a time
    # (kill point, then: lake events, DynamoDB items, warehouse rows); lake None = some but maybe not all
    # (one object per arrival hour: a range spanning an hour boundary has two).
    plan = [
        *scale([], [("kinesis.GetRecords:1", 0, 0, 0)]),  # the range read, nothing written yet
        ("s3.PutObject:1", None, 0, 0),  # the first lake object
        ("dynamodb.BatchWriteItem:1", total, 25, 0),
        *[(f"dynamodb.BatchWriteItem:{n}", total, 25 * n, 0) for n in scale([], [batches // 4])],
        (f"dynamodb.BatchWriteItem:{batches // 2}", total, 25 * (batches // 2), 0),
        *[(f"dynamodb.BatchWriteItem:{n}", total, 25 * n, 0) for n in scale([], [3 * batches // 4])],
        (f"dynamodb.BatchWriteItem:{batches}", total, total, 0),  # every item, the warehouse not yet
        ("warehouse.insert.before:1", total, total, 0),  # transaction open, INSERT not sent
        ("warehouse.insert.after:1", total, total, 0),  # INSERT done, not committed: rolled back by the crash
        ("warehouse.commit.after:1", total, total, total),  # committed: a resumed drain must not insert again
    ]
    kills = []
    for point, lake, items, rows in plan:
        started = time.monotonic()
        code, said, err = _drain_process(shard, first, last, kill_at=point)
        kills.append(f"{point}={time.monotonic() - started:.1f}s")
        assert code == KILLED and said.get("at") == point, f"not killed at {point}: exit {code}, {said}\n{err}"
        counts = _reconcile(sinks, day, accepted).counts
        assert counts["dynamodb"] == items and counts["downloads_stream"] == rows, (point, counts)
        assert (0 < counts["lake"] <= total) if lake is None else counts["lake"] == lake, (point, counts)
    started = time.monotonic()
    code, said, err = _drain_process(shard, first, last)
    resumed_seconds = time.monotonic() - started
    assert code == 0, err
    # The resumed drain rewrote every write (same keys), and inserted no row: the last kill came after the commit.
    assert said["counts"]["dynamodb.BatchWriteItem"] == batches and said["warehouse_inserted"] == 0, said
    result = _reconcile(sinks, day, accepted)
    assert result.ok, result.describe()
    assert result.counts == {"accepted": total, "lake": total, "dynamodb": total, "downloads_stream": total}
    report("crash (drain killed at chosen points)", records=total, dynamodb_batches=batches, kills=len(plan),
           exit_code=KILLED, kill_runs=" ".join(kills), resumed=f"{resumed_seconds:.1f}s",
           resumed_writes=said["counts"], lost=0, duplicated=0)


API_SCRIPT = """
import sys, uvicorn
from appdata.api.app import create_app
uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@pytest.fixture()
def api_process(module_env):
    """The API in its own uvicorn process (as `appdata api` serves it), so clients don't share its GIL."""
    from appdata.local.emulator import free_port
    from appdata_tests.support.api import LocalApi

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", API_SCRIPT, str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "API process did not start"
        time.sleep(0.2)
    api = LocalApi.__new__(LocalApi)
    api.url, api.key = url, os.environ["APPDATA_API_KEYS"]
    yield api
    proc.terminate()
    proc.wait(timeout=20)


def test_fifty_clients_posting_concurrently(api_process, sinks):
    local_api = api_process
    settings = sinks["settings"]
    day = "2023-05-01"
    seconds = scale(6, 60)
    before = stream_tail(sinks["kinesis"], settings.stream)
    stop = time.monotonic() + seconds
    statuses: list[int] = []
    accepted: set[str] = set()
    lock = threading.Lock()

    def client(number: int) -> None:
        with httpx.Client(timeout=120) as http:
            sent = 0
            while time.monotonic() < stop:
                batch = [make_event(number * 1_000_000 + sent + i, day=day) for i in range(10)]
                sent += 10
                status, body = post(local_api, batch, client=http)
                with lock:
                    statuses.append(status)
                    if status in (200, 207):
                        accepted.update(body["event_ids"])

    with cf.ThreadPoolExecutor(50) as pool:
        list(pool.map(client, range(50)))
    server_errors = [s for s in statuses if s >= 500]
    assert server_errors == [], f"{len(server_errors)} 5xx answers of {len(statuses)}"
    for shard, first, last in shard_ranges(sinks["kinesis"], settings.stream, after=before):
        _drain(sinks, shard, first, last)
    result = _reconcile(sinks, day, accepted)
    assert result.ok, result.describe()
    report("load", clients=50, seconds=seconds, requests=len(statuses), accepted=len(accepted),
           server_errors=0, reconciled=len(accepted))
