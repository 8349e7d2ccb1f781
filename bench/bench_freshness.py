"""Freshness: seconds from POST /v1/downloads to the event being returned by GET, default settings.

Run: /tmp/v/bin/python bench/bench_freshness.py [--duration 60] [--interval 0.5]

Serves the ingest API (appdata.api.app.create_app) with uvicorn in a thread on the emulator,
drains with one shard consumer per shard in a thread (the `ShardConsumer` a drain run holds,
under the shard's lease, at its default polling), POSTs one event every `--interval` s, each for
a fresh user, and polls GET /v1/users/{id}/downloads until it answers. That leaves out the
Dagster daemon's run launch and the sensor; `--stack` measures them too, against a running
`appdata up` (the sensor and its daemon-launched consumer runs, the default path).
The LAST line is p95 against the 30 s target (ratio <= 1.0 meets it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
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

from appdata.local.emulator import emulator_process, free_port  # noqa: E402

TARGET_P95 = 30.0


def event(i: int, run: str) -> dict:
    return {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"fresh-{run}-{i}")), "user_id": 900_001 + i,
        "name": "Fresh User", "location": "Iowa", "age": 33, "app": f"App {i}", "category": "TOOLS",
        "rating": 4.2, "reviews": 12, "size_mb": 3.5, "installs": 1000, "type": "Free", "price": 0.0,
        "content_rating": "Everyone", "genres": "Tools", "last_updated": "2018-07-01", "current_ver": "1.2",
        "android_ver": "5.0 and up", "minutes_spent": 12, "download_date": dt.date.today().isoformat(),
    }


def measure(api: str, key: str, duration: float, interval: float, label: str) -> None:
    """POST one event every `interval` s for `duration` s, poll GET until each is served; print stats."""
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
                    if client.get(f"{api}/v1/users/{900_001 + i}/downloads").status_code == 200:
                        with lock:
                            seen[i] = time.monotonic()
                time.sleep(0.25)

    threading.Thread(target=checker, daemon=True).start()
    count = int(duration / interval)
    start = time.monotonic()
    with httpx.Client(headers={"x-api-key": key}, timeout=30) as client:
        for i in range(count):
            t = time.monotonic()
            answer = client.post(f"{api}/v1/downloads", json=[event(i, run)])
            assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
            with lock:
                posted[i] = t
            time.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))
    deadline = time.monotonic() + 120
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    delays = sorted(seen[i] - posted[i] for i in seen)
    p50 = statistics.median(delays)
    p95 = delays[int(0.95 * (len(delays) - 1))]
    print(f"posted {count} events over {duration:.0f}s; {len(seen)} returned by GET; {label}")
    print(f"freshness POST -> GET: p50 {p50:.1f}s, p95 {p95:.1f}s, max {delays[-1]:.1f}s")
    print(f"ratio p95 / 30 s target: {p95 / TARGET_P95:.2f} (<= 1.0 meets it; Firehose's default buffer is 300 s)")


def measure_running_stack(args: argparse.Namespace) -> None:
    """Against `appdata up`: its API, its sensor, its drain runs launched by the Dagster daemon."""
    from appdata.local.environment import local_environment

    from appdata.config import Settings

    settings = Settings.from_env()
    key = local_environment(settings)["APPDATA_API_KEYS"].split(",")[0]
    measure(settings.api_url, key, args.duration, args.interval,
            "the running stack (sensor + daemon-launched drain runs)")


def measure_in_process(args: argparse.Namespace) -> None:
    """API under uvicorn in a thread and a drain loop at the sensor's cadence, on a fresh emulator."""
    with emulator_process() as endpoint:
        home = tempfile.mkdtemp(prefix="bench-fresh-")
        key = uuid.uuid4().hex
        os.environ.update(APPDATA_HOME=home, APPDATA_AWS_ENDPOINT_URL=endpoint, APPDATA_API_KEYS=key)
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
            measure(f"http://127.0.0.1:{api_port}", key, args.duration, args.interval,
                    "a shard consumer per shard in process")
        finally:
            stop.set()
            for thread in consumers:
                thread.join(timeout=60)
            server.should_exit = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--stack", action="store_true",
                        help="measure the running `appdata up` (same APPDATA_* environment) instead")
    args = parser.parse_args()
    (measure_running_stack if args.stack else measure_in_process)(args)


if __name__ == "__main__":
    main()
