"""Freshness: seconds from POST /v1/downloads to the event being returned by GET.

Run: .venv/bin/python bench/bench_freshness.py --stack [--duration 60] [--rate 10] [--load 500]

`--stack` measures a running `appdata up` with default settings (same APPDATA_* environment): its
API, the drain sensor and its daemon-launched consumer runs. Without it, the ingest API runs
under uvicorn in a thread and one `ShardConsumer` per shard in threads, on a fresh emulator.
Two phases: probes alone (`--rate` POSTs a second, one event each, for a fresh user, each polled
with GET /v1/users/{id}/downloads until it answers), then the same probes while a separate
process posts `--load` events a second in batches (the stream at a production rate).
The LAST line gives p95 of both phases against the targets: 5 s quiet, 10 s under load.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from _common import bench_events  # noqa: E402
from appdata.local.emulator import emulator_process, free_port  # noqa: E402

TARGET_P95_QUIET = 5.0
TARGET_P95_LOADED = 10.0
PROBE_FIRST_USER = 900_001


def probe_event(i: int, run: str) -> dict:
    """A probe: the bench event shape for its own user (900,001 + i), so GET by user finds only it."""
    (event,) = bench_events(1, f"fresh-{run}-{i}")
    return {**event, "user_id": PROBE_FIRST_USER + i, "app": f"Probe App {i}"}


def post_load(api: str, key: str, rate: int, seconds: float, ready, done) -> None:
    """Post `rate` events a second for `seconds` in batches of 100 (users other than the probes')."""
    batch = 100
    events = bench_events(int(rate * seconds), f"load-{uuid.uuid4().hex[:8]}")
    with httpx.Client(headers={"x-api-key": key}, timeout=30) as client:
        ready.set()
        start = time.monotonic()
        for n, offset in enumerate(range(0, len(events), batch)):
            answer = client.post(f"{api}/v1/downloads", json=events[offset:offset + batch])
            assert answer.status_code == 200, answer.text
            pause = start + (n + 1) * batch / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        done.value = time.monotonic() - start


def probe(api: str, key: str, duration: float, rate: float, offset: int) -> list[float]:
    """POST one probe `rate` times a second for `duration` s, poll GET until each is served; the delays."""
    stop = threading.Event()
    run = uuid.uuid4().hex[:8]
    posted: dict[int, float] = {}
    seen: dict[int, float] = {}
    lock = threading.Lock()

    def checker() -> None:
        with httpx.Client(headers={"x-api-key": key}, timeout=10) as client:
            while not stop.is_set():
                with lock:
                    pending = [i for i in posted if i not in seen]
                for i in pending:
                    if client.get(f"{api}/v1/users/{PROBE_FIRST_USER + i}/downloads").status_code == 200:
                        with lock:
                            seen[i] = time.monotonic()
                time.sleep(0.1)

    threading.Thread(target=checker, daemon=True).start()
    count = int(duration * rate)
    start = time.monotonic()
    with httpx.Client(headers={"x-api-key": key}, timeout=30) as client:
        for n in range(count):
            i = offset + n
            t = time.monotonic()
            answer = client.post(f"{api}/v1/downloads", json=[probe_event(i, run)])
            assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
            with lock:
                posted[i] = t
            time.sleep(max(0.0, start + (n + 1) / rate - time.monotonic()))
    deadline = time.monotonic() + 120
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    if len(seen) < count:
        print(f"  {count - len(seen)} of {count} probes NOT returned by GET within 120 s")
    return sorted(seen[i] - posted[i] for i in seen)


def summary(label: str, delays: list[float]) -> float:
    p95 = delays[int(0.95 * (len(delays) - 1))]
    print(f"{label}: {len(delays)} probes, POST -> GET p50 {statistics.median(delays):.2f}s, p95 {p95:.2f}s, "
          f"max {delays[-1]:.2f}s")
    return p95


def measure(api: str, key: str, args: argparse.Namespace, label: str) -> None:
    print(f"against {label}")
    quiet = summary(f"quiet, {args.rate:g} probes/s", probe(api, key, args.duration, args.rate, 0))
    loaded = None
    if args.load:
        ctx = mp.get_context("spawn")
        ready, done = ctx.Event(), ctx.Value("d", 0.0)
        loader = ctx.Process(target=post_load, args=(api, key, args.load, args.duration + 10, ready, done))
        loader.start()
        ready.wait()
        time.sleep(5)  # the load reaches its rate before the probes start
        delays = probe(api, key, args.duration, args.rate, 1_000_000)
        loader.join()
        loaded = summary(f"while {args.load} events/s are posted ({args.load * (args.duration + 10):,.0f} events "
                         f"in {done.value:.0f}s)", delays)
    line = f"p95 quiet {quiet:.2f}s ({quiet / TARGET_P95_QUIET:.2f} of the {TARGET_P95_QUIET:.0f} s target)"
    if loaded is not None:
        line += f", under load {loaded:.2f}s ({loaded / TARGET_P95_LOADED:.2f} of the {TARGET_P95_LOADED:.0f} s target)"
    print(line)


def measure_running_stack(args: argparse.Namespace) -> None:
    """Against `appdata up`: its API, its sensor, its drain runs launched by the Dagster daemon."""
    from appdata.local.environment import local_environment

    from appdata.config import Settings

    settings = Settings.from_env()
    key = local_environment(settings)["APPDATA_API_KEYS"].split(",")[0]
    measure(settings.api_url, key, args, "the running appdata up (sensor + daemon-launched consumer runs)")


def measure_in_process(args: argparse.Namespace) -> None:
    """API under uvicorn in a thread and a drain loop at the sensor's cadence, on a fresh emulator."""
    with emulator_process() as endpoints:
        home = tempfile.mkdtemp(prefix="bench-fresh-")
        key = uuid.uuid4().hex
        os.environ.update(APPDATA_HOME=home, APPDATA_API_KEYS=key, **endpoints.environment())
        import uvicorn

        from appdata.api.app import create_app
        from appdata.config import Settings
        from appdata.local.provision import provision
        from appdata.defs.resources import build_resources
        from appdata.stream.consumer import ShardConsumer, Sinks, stream_created
        from appdata.stream.drain import list_shards, parents_of, shard_order
        from appdata.stream.leases import LeaseTable

        settings = Settings.from_env()
        res = build_resources(settings)
        provision(res)
        api_port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=api_port,
                                               log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        stop = threading.Event()
        kinesis, dynamodb = res["kinesis"].get_client(), res["dynamodb"].get_client()
        stream = res["kinesis"].stream_name
        sinks = Sinks(s3=res["s3"].get_client(), bucket=res["s3"].bucket, dynamodb=dynamodb,
                      table=res["dynamodb"].table_name, warehouse=res["warehouse"].connect)
        leases = LeaseTable(dynamodb, res["dynamodb"].lease_table_name, stream)
        created = stream_created(kinesis, stream)
        consumers = []
        for shard in shard_order(list_shards(kinesis, stream)):
            consumer = ShardConsumer(
                kinesis=kinesis, stream=stream, shard_id=shard["ShardId"], parents=parents_of(shard), leases=leases,
                owner=f"bench-{uuid.uuid4().hex[:8]}", sinks=sinks, created=created,
                clock=lambda: math.inf if stop.is_set() else time.time(),  # its deadline passes when the bench stops
                sleep=stop.wait)
            consumers.append(threading.Thread(target=consumer.run, daemon=True))
        for thread in consumers:
            thread.start()
        try:
            measure(f"http://127.0.0.1:{api_port}", key, args, "the API and a shard consumer per shard in process")
        finally:
            stop.set()
            for thread in consumers:
                thread.join(timeout=60)
            server.should_exit = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of probes per phase")
    parser.add_argument("--rate", type=float, default=10.0, help="probe POSTs a second")
    parser.add_argument("--load", type=int, default=500, help="events a second posted meanwhile (0: no load phase)")
    parser.add_argument("--stack", action="store_true",
                        help="measure the running `appdata up` (same APPDATA_* environment) instead")
    args = parser.parse_args()
    (measure_running_stack if args.stack else measure_in_process)(args)


if __name__ == "__main__":
    main()
