"""The stream path under replays, crashes, load and log capture, on the real API (uvicorn),
the real emulator and the real drain (the shard consumer, resuming from its checkpoint; ranges
replayed explicitly with `drain_range`): 0 lost, 0 duplicated in each sink, keys never logged."""

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

from appdata import aws
from appdata.contract import layout
from appdata.reliability.reconcile import reconcile_stream_day
from appdata.stream.consumer import ShardConsumer, stream_created
from appdata.stream.drain import drain_range
from appdata.stream.leases import shard_key
from appdata_tests.support.api import post
from appdata_tests.support.events import make_event
from appdata_tests.support.reliability import report, scale
from appdata_tests.support.stream import consumer_sinks, drain_all, lease_table, shard_ranges, stream_tail

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def sinks(module_env):
    from appdata.defs.resources import build_resources

    resources = build_resources(module_env)
    engine = resources["warehouse"].get_engine()
    yield {"s3": resources["s3"].get_client(), "kinesis": resources["kinesis"].get_client(),
           "dynamodb": resources["dynamodb"].get_client(), "engine": engine, "settings": module_env,
           "resources": resources}
    engine.dispose()


def _consume(sinks, owner: str = "test-drain"):
    """Every shard drained up to now by a consumer that stops once caught up (its ranges)."""
    return drain_all(sinks["resources"], sinks["engine"], owner=owner)


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
    assert sum(r.records for r in _consume(sinks)) >= 2  # the accepted POST and the replay
    # The dead letter's event_id (the API derived it on arrival) is kept: a replay is the same event.
    from appdata.contract.schema import derive_event_id

    kept = shown[0]["record"].get("event_id") or derive_event_id(shown[0]["record"])
    accepted.add(kept)
    result = _reconcile(sinks, day, accepted)
    assert result.ok, result.describe()
    report("dead letter replayed through the API", records=1, second_replay_refused=True)


def test_every_post_twice_and_every_drain_range_three_times(local_api, sinks):
    day = "2023-03-01"
    total = scale(600, 5000)
    records = [make_event(1000 + i, day=day, age=5 if i % 25 == 0 else 30) for i in range(total)]
    _consume(sinks)  # whatever earlier tests left: the ranges below are this test's
    accepted: set[str] = set()
    rejected = 0
    ranges = []
    for start in range(0, total, 100):
        batch = records[start:start + 100]
        first = post(local_api, batch)
        second = post(local_api, batch)  # a client retrying the same POST
        assert first[0] in (200, 207) and first[1]["event_ids"] == second[1]["event_ids"]
        accepted |= set(first[1]["event_ids"])
        rejected += len(first[1]["rejected"])
        if (start // 100) % 2 == 1:  # the consumer catches up every other POST: ranges of two POSTs each
            ranges += [(r.shard_id, r.first_sequence, r.last_sequence) for r in _consume(sinks)]
    ranges += [(r.shard_id, r.first_sequence, r.last_sequence) for r in _consume(sinks)]
    assert len(ranges) == -(-total // 200)
    for _ in range(2):  # each range drained twice more
        for shard, first_seq, last_seq in ranges:
            _drain(sinks, shard, first_seq, last_seq)
    result = _reconcile(sinks, day, accepted)
    assert result.ok, result.describe()
    assert len(accepted) == total - rejected and rejected == total // 25
    assert result.counts == {"accepted": len(accepted), "lake": len(accepted), "dynamodb": len(accepted),
                             "downloads_stream": len(accepted)}
    report("replay", records=total, posts=2 * -(-total // 100), drain_ranges=len(ranges), drains_each=3,
           accepted=len(accepted), rejected=rejected, lost=0, duplicated=0)


EXTRA = 100  # records posted while a killed consumer's range is pending
KILLED = 86  # the exit code of a consumer stopped at its kill point (a crash, not an error: no cleanup runs)

CONSUMER_SCRIPT = """
import json, os, sys, time
from contextlib import nullcontext
import sqlalchemy as sa
from appdata.config import Settings
from appdata.defs.resources import build_resources
from appdata.stream.consumer import ShardConsumer, Sinks, stream_created
from appdata.stream.drain import list_shards, parents_of
from appdata.stream.leases import LeaseTable

# Kill point chosen by the test: "<point>:<n>" = os._exit(%(killed)d) right after the n-th occurrence of <point>
# in this process (points: the botocore after-call events and SQLAlchemy hooks registered below). Apart from
# the one line telling the test where, nothing runs: no finally, no lease release, no rollback, like a SIGKILL.
# Empty: run to the end.
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

def name_lease_write(params, context, **_):
    # Which write of the lease item an UpdateItem is, by the item attribute it sets (leases.py).
    if params.get("TableName") == s.lease_table:
        update = params.get("UpdateExpression", "")
        context["lease_write"] = ("lease.begin_range" if "pending_first =" in update
                                  else "lease.commit_range" if "checkpoint =" in update else None)

def after_lease_write(http_response, context, **_):
    if http_response.status_code < 300 and context.get("lease_write"):
        reached(context["lease_write"])

dynamodb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", name_lease_write)
dynamodb.meta.events.register("after-call.dynamodb.UpdateItem", after_lease_write)

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

ranges = []
(shard,) = [shard for shard in list_shards(kinesis, s.stream) if shard["ShardId"] == sys.argv[1]]
consumer = ShardConsumer(
    kinesis=kinesis, stream=s.stream, shard_id=sys.argv[1], parents=parents_of(shard),
    leases=LeaseTable(dynamodb, s.lease_table, s.stream), owner=sys.argv[2], created=stream_created(kinesis, s.stream),
    sinks=Sinks(s3=s3, bucket=s.bucket, dynamodb=dynamodb, table=s.table, warehouse=lambda: nullcontext(engine)),
    on_range=lambda result: ranges.append([result.first_sequence, result.last_sequence, result.warehouse_inserted]),
    sleep=lambda seconds: None)
summary = consumer.run(stop_when_caught_up=True)
print("drained " + json.dumps({"counts": counts, "seconds": round(time.monotonic() - started, 2), "ranges": ranges,
                               "lease_taken": summary.lease_taken, "notes": summary.notes}), flush=True)
""" % {"killed": KILLED}


def _consumer_process(shard: str, owner: str, kill_at: str = "") -> tuple[int, dict, str]:
    """A shard consumer in its own process (until caught up), killed at `kill_at`; (exit code, its last
    report, stderr tail)."""
    env = dict(os.environ, APPDATA_TEST_KILL_AT=kill_at)
    proc = subprocess.run([sys.executable, "-c", CONSUMER_SCRIPT, shard, owner], capture_output=True,
                          text=True, timeout=300, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("killed ", "drained "))]
    said = json.loads(lines[-1].split(" ", 1)[1]) if lines else {}
    return proc.returncode, said, proc.stderr[-2000:]


def _lease_runs_out(leases, shard: str) -> None:
    """The killed consumer's lease expires, as LEASE_SECONDS of its silence would make it: the
    test moves the expiry into the past instead of waiting for the clock."""
    leases.dynamodb.update_item(TableName=leases.table, Key={"shard": {"S": shard_key(leases.stream, shard)}},
                                UpdateExpression="SET lease_expires_ms = :past",
                                ExpressionAttributeValues={":past": {"N": "0"}})


def _lake_keys(sinks, day: str) -> set[str]:
    return set(aws.list_keys(sinks["s3"], sinks["settings"].bucket, layout.partition(layout.LAKE, day)))


def _range_bounds(keys: set[str]) -> tuple[int, int]:
    """The sequence range that lake objects cover, each named <shard>-<first>-<last>; they must not overlap."""
    bounds = sorted((int(a), int(b)) for a, b in (key.rsplit("/", 1)[1].removesuffix(".jsonl.gz").split("-")[-2:]
                                                   for key in keys))
    assert all(end < start for (_, end), (start, _) in zip(bounds, bounds[1:])), bounds
    return bounds[0][0], bounds[-1][1]


def test_drain_killed_at_chosen_points_then_resumed_loses_and_doubles_nothing(local_api, sinks):
    """A shard consumer is killed at points the test names (not after a sleep), in the order it
    works: after reading the range; after recording it pending (write-ahead); after the first lake
    object; after the first, middle and last DynamoDB batch (between sinks); just before and just
    after the warehouse INSERT (uncommitted); just after its COMMIT (every sink holds the range, the
    checkpoint not moved yet); just after the checkpoint moved (full run: also after a quarter and
    three quarters of the batches). Each killed consumer leaves exactly the sinks and the lease
    item its kill point implies; while its lease runs, another consumer keeps off the shard; the
    next consumer (a new owner) drains exactly the pending range again first, though more records
    arrived behind it meanwhile, and the last drains only those. Exact counts in every sink, and
    the lake holds one object per range key: no second object of a re-cut range."""
    settings = sinks["settings"]
    day = "2023-04-01"
    total = scale(1500, 4000)
    _consume(sinks)  # whatever earlier tests left: the consumers below read this test's records only
    leases = lease_table(sinks["resources"])
    before = stream_tail(sinks["kinesis"], settings.stream)
    accepted: set[str] = set()
    for start in range(0, total, 500):
        status, body = post(local_api, [make_event(20_000 + i, day=day) for i in range(start, min(total, start + 500))])
        assert status == 200
        accepted |= set(body["event_ids"])
    assert len(accepted) == total
    ((shard, first, last),) = shard_ranges(sinks["kinesis"], settings.stream, after=before)
    checkpoint = before.get(shard)  # None on a stream that was empty: the consumers read from its start
    assert leases.get(shard).checkpoint == checkpoint
    batches = -(-total // 25)  # BatchWriteItem calls: the drain writes DynamoDB 25 items at a time
    # (kill point, then: lake events, DynamoDB items, warehouse rows, the range pending?, the checkpoint);
    # lake None = some but maybe not all (one object per arrival hour: a range spanning an hour has two).
    pending, done = (first, last), last

    def after_batch(n: int) -> tuple[int, int]:
        """DynamoDB items after the n-th BatchWriteItem answered: its calls run BATCH_WRITE_CONCURRENCY at
        a time, so the others in flight may have landed too."""
        return 25 * n, min(total, 25 * (n + aws.BATCH_WRITE_CONCURRENCY - 1))

    plan = [
        # the range read, nothing recorded or written (a consumer resuming at a checkpoint reads that
        # record back first, to know the stream still holds it)
        (f"kinesis.GetRecords:{1 if checkpoint is None else 2}", 0, 0, 0, None, checkpoint),
        ("lease.begin_range:1", 0, 0, 0, pending, checkpoint),  # recorded pending (write-ahead), nothing written
        ("s3.PutObject:1", None, 0, 0, pending, checkpoint),  # the first lake object
        ("dynamodb.BatchWriteItem:1", total, after_batch(1), 0, pending, checkpoint),
        *[(f"dynamodb.BatchWriteItem:{n}", total, after_batch(n), 0, pending, checkpoint)
          for n in scale([], [batches // 4])],
        (f"dynamodb.BatchWriteItem:{batches // 2}", total, after_batch(batches // 2), 0, pending, checkpoint),
        *[(f"dynamodb.BatchWriteItem:{n}", total, after_batch(n), 0, pending, checkpoint)
          for n in scale([], [3 * batches // 4])],
        (f"dynamodb.BatchWriteItem:{batches}", total, total, 0, pending, checkpoint),  # the warehouse not yet
        ("warehouse.insert.before:1", total, total, 0, pending, checkpoint),  # transaction open, INSERT not sent
        ("warehouse.insert.after:1", total, total, 0, pending, checkpoint),  # not committed: rolled back by the crash
        ("warehouse.commit.after:1", total, total, total, pending, checkpoint),  # every sink, checkpoint not moved
        ("lease.commit_range:1", total, total, total, None, done),  # the checkpoint moved, the lease not released
    ]
    kills = []
    lake_keys: set[str] = set()
    for n, (point, lake, items, rows, left_pending, left_checkpoint) in enumerate(plan, start=1):
        started = time.monotonic()
        code, said, err = _consumer_process(shard, f"consumer-{n}", kill_at=point)
        kills.append(f"{point}={time.monotonic() - started:.1f}s")
        assert code == KILLED and said.get("at") == point, f"not killed at {point}: exit {code}, {said}\n{err}"
        counts = _reconcile(sinks, day, accepted).counts
        fewest, most = items if isinstance(items, tuple) else (items, items)
        assert fewest <= counts["dynamodb"] <= most and counts["downloads_stream"] == rows, (point, counts)
        assert (0 < counts["lake"] <= total) if lake is None else counts["lake"] == lake, (point, counts)
        lease = leases.get(shard)
        assert (lease.owner, lease.pending, lease.checkpoint) == (f"consumer-{n}", left_pending, left_checkpoint)
        if lake == total:  # the range's objects, whole: every later write must land on these same keys
            lake_keys = lake_keys or _lake_keys(sinks, day)
            assert _lake_keys(sinks, day) == lake_keys, point
        if n == 2:
            # While the killed consumer's lease runs, another one keeps off the shard, pending range and all.
            intruder = ShardConsumer(
                kinesis=sinks["kinesis"], stream=settings.stream, shard_id=shard, parents=[], leases=leases,
                owner="intruder", sinks=consumer_sinks(sinks["resources"], sinks["engine"]),
                created=stream_created(sinks["kinesis"], settings.stream), sleep=lambda seconds: None,
            ).run(stop_when_caught_up=True)
            assert (intruder.lease_taken, intruder.ranges) == (False, 0)
            assert leases.get(shard) == lease and _reconcile(sinks, day, accepted).counts == counts
            # More records arrive behind the pending range: the next consumers must drain exactly
            # first..last again (a read from the checkpoint would cut first..<newest>, a new lake key).
            status, body = post(local_api, [make_event(30_000 + i, day=day) for i in range(EXTRA)])
            assert status == 200
            extra = set(body["event_ids"])
            ((_, extra_first, extra_last),) = shard_ranges(sinks["kinesis"], settings.stream, after={shard: last})
        _lease_runs_out(leases, shard)
    started = time.monotonic()
    code, said, err = _consumer_process(shard, "consumer-last")
    resumed_seconds = time.monotonic() - started
    assert code == 0, err
    # The last consumer took the shard over and drained only what came after the checkpoint: the
    # records that arrived meanwhile, as a range of their own (the killed range is not drained again).
    assert said["lease_taken"] and said["ranges"] == [[extra_first, extra_last, EXTRA]], said
    lease = leases.get(shard)
    assert (lease.owner, lease.pending, lease.checkpoint) == (None, None, extra_last)
    result = _reconcile(sinks, day, accepted | extra)
    assert result.ok, result.describe()
    everything = total + EXTRA
    assert result.counts == {"accepted": everything, "lake": everything, "dynamodb": everything,
                             "downloads_stream": everything}
    # One object per (day, hour) of each range, named within its bounds: no re-cut range beside them.
    assert _lake_keys(sinks, day) >= lake_keys and 1 <= len(lake_keys) <= 2
    assert _range_bounds(lake_keys) == (int(first), int(last))
    assert _range_bounds(_lake_keys(sinks, day) - lake_keys) == (int(extra_first), int(extra_last))
    report("crash (shard consumer killed at chosen points)", records=total, dynamodb_batches=batches,
           kills=len(plan), exit_code=KILLED, kill_runs=" ".join(kills), resumed=f"{resumed_seconds:.1f}s",
           lost=0, duplicated=0)


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
    day = "2023-05-01"
    seconds = scale(6, 60)
    _consume(sinks)  # whatever earlier tests left: what is drained below is this test's
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
    drained = _consume(sinks)
    assert sum(r.valid for r in drained) == len(accepted)
    result = _reconcile(sinks, day, accepted)
    assert result.ok, result.describe()
    report("load", clients=50, seconds=seconds, requests=len(statuses), accepted=len(accepted),
           server_errors=0, reconciled=len(accepted))


@pytest.mark.emulator
def test_events_the_api_accepted_survive_a_kinesis_sigkill_and_reconcile_against_the_stream(
        appdata_env, tmp_path, monkeypatch):
    """The API answers 200 for 300 events; Kinesis (an emulator process of its own, with a state
    directory) is SIGKILLed right after, long before a periodic snapshot, and started again on the
    same directory. Every event is on the stream, so the stream as reconciliation's reference holds
    every id the API accepted, and after a drain every sink holds them."""
    from appdata.config import Settings, endpoint_variable
    from appdata.defs.resources import build_resources
    from appdata.local.provision import provision
    from appdata.reliability.reconcile import reconcile_stream_against_source
    from appdata_tests.support.api import LocalApi
    from appdata_tests.support.emulator import KinesisProcess

    emulator = KinesisProcess(tmp_path / "state", appdata_env)
    emulator.start()
    api = None
    try:
        monkeypatch.setenv(endpoint_variable("kinesis"), emulator.server.endpoint)
        settings = Settings.from_env()
        resources = build_resources(settings)
        provision(resources)
        api = LocalApi(settings, os.environ["APPDATA_API_KEYS"])
        day = "2023-06-01"
        status, body = post(api, [make_event(40_000 + i, day=day) for i in range(300)])
        emulator.kill()  # right after the answer
        assert status == 200 and len(body["event_ids"]) == 300
        emulator.start()
        engine = resources["warehouse"].get_engine()
        try:
            drain_all(resources, engine)
            (result,), reference = reconcile_stream_against_source(
                s3=resources["s3"].get_client(), bucket=settings.bucket, dynamodb=resources["dynamodb"].get_client(),
                table=settings.table, engine=engine, kinesis=resources["kinesis"].get_client(), stream=settings.stream,
                days=[day], grace_seconds=0)
        finally:
            engine.dispose()
        assert set(reference.accepted.get(day, {})) == set(body["event_ids"])
        assert result.ok and result.counts["downloads_stream"] == 300, result.describe()
    finally:
        if api is not None:
            api.stop()
        if emulator.proc.poll() is None:
            emulator.kill()
