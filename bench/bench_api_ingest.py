"""API ingest throughput: records/s through POST /v1/downloads (batches of 500) vs raw PutRecords.

Both go to the same emulator (a moto server subprocess) in the same run; the API is served by
uvicorn in a subprocess (`appdata api`), exactly as `appdata up` runs it. Rounds alternate
(raw, API, raw, API, ...) so machine load hits both alike; the median of each is compared.

    /tmp/v/bin/python bench/bench_api_ingest.py [--batches 20] [--rounds 3]

Last line: the ratio API / raw (target >= 0.7x).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from appdata.config import Settings  # noqa: E402
from appdata.local.emulator import emulator_process, free_port  # noqa: E402
from appdata.local.provision import ensure_bucket, ensure_stream, ensure_table  # noqa: E402
from appdata.defs.resources import build_resources  # noqa: E402
from appdata.contract.schema import client_event_ids  # noqa: E402
from appdata_tests.support.events import make_event  # noqa: E402

BATCH = 500


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="batches of 500 per round and per path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=1,
                        help="requests in flight, for both paths alike (threads)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of `appdata api`")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-api-"))
    api_port = free_port()
    emulator = contextlib.ExitStack()
    endpoints = emulator.enter_context(emulator_process())
    key = uuid.uuid4().hex
    env = {**os.environ, "APPDATA_HOME": str(home), **endpoints.environment(),
           "APPDATA_BUCKET": "bench-api-lake", "APPDATA_STREAM": "bench-api-stream", "APPDATA_TABLE": "bench-api",
           "APPDATA_API_KEYS": key, "APPDATA_API_HOST": "127.0.0.1", "APPDATA_API_PORT": str(api_port),
           "APPDATA_WAREHOUSE_URL": f"duckdb:///{home / 'w.duckdb'}"}
    os.environ.update(env)
    procs: list[subprocess.Popen] = []
    try:
        settings = Settings.from_env()
        resources = build_resources(settings)
        ensure_bucket(resources["s3"])
        ensure_stream(resources["kinesis"], shards=args.shards)
        ensure_table(resources["dynamodb"])
        procs.append(subprocess.Popen([sys.executable, "-m", "appdata.cli", "api", "--log-level", "warning",
                                       "--workers", str(args.workers)],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        api_url = f"http://127.0.0.1:{api_port}"
        wait_http(f"{api_url}/healthz")

        kinesis = resources["kinesis"].get_client()
        total = args.batches * BATCH
        print(f"{total} records per round and path, batches of {BATCH}, {args.rounds} rounds, "
              f"{args.shards} shards, {args.concurrency} in flight, {args.workers} API worker(s), Kinesis at {endpoints.kinesis}")

        def batches(round_no: int, tag: str) -> list[list[dict]]:
            # ids as the stream client sends them (users_app_stream_client_data carries event_id)
            ids = client_event_ids(f"bench-{tag}", round_no, "2024-01-01", total)
            events = [make_event(i, app=f"{tag} app {round_no}-{i}", event_id=ids[i]) for i in range(total)]
            return [events[i:i + BATCH] for i in range(0, total, BATCH)]

        def run_raw(round_no: int) -> float:
            """The floor: what boto3 alone does with the same typed records, no HTTP, no validation."""
            prepared = [[{"Data": json.dumps(e, separators=(",", ":")).encode(),
                          "PartitionKey": str(e["user_id"])} for e in batch] for batch in batches(round_no, "raw")]

            def put(entries: list[dict]) -> None:
                response = kinesis.put_records(StreamName=settings.stream, Records=entries)
                assert response.get("FailedRecordCount", 0) == 0

            start = time.perf_counter()
            list(pool.map(put, prepared))
            return total / (time.perf_counter() - start)

        pool = ThreadPoolExecutor(args.concurrency)
        with httpx.Client(base_url=api_url, headers={"x-api-key": key}, timeout=60) as client:
            client.post("/v1/downloads", json=[make_event(0)])  # warm the app's clients

            def run_api(round_no: int) -> float:
                bodies = [json.dumps({"records": batch}).encode() for batch in batches(round_no, "api")]

                def post(body: bytes) -> None:
                    response = client.post("/v1/downloads", content=body,
                                           headers={"content-type": "application/json"})
                    assert response.status_code == 200 and response.json()["accepted"] == BATCH, response.text[:300]

                start = time.perf_counter()
                list(pool.map(post, bodies))
                return total / (time.perf_counter() - start)

            raw_rates, api_rates = [], []
            for round_no in range(args.rounds):
                # ABBA order: moto slows as its stream grows, so whichever path goes second in a
                # round is measured on a bigger stream; alternating cancels that bias.
                if round_no % 2 == 0:
                    raw_rates.append(run_raw(round_no))
                    api_rates.append(run_api(round_no))
                else:
                    api_rates.append(run_api(round_no))
                    raw_rates.append(run_raw(round_no))
                print(f"round {round_no + 1}: raw put_records {raw_rates[-1]:,.0f} rec/s, "
                      f"POST /v1/downloads {api_rates[-1]:,.0f} rec/s")

        raw, api = statistics.median(raw_rates), statistics.median(api_rates)
        print(f"median: raw put_records {raw:,.0f} rec/s, API {api:,.0f} rec/s")
        print(f"ratio API/raw = {api / raw:.2f}x (target >= 0.7x)")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        emulator.close()


if __name__ == "__main__":
    main()
