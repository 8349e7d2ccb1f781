"""What durable Kinesis puts cost the local emulator: a put on disk before its answer, two ways.

One Kinesis emulator process, three ways, each on a stream already holding `--fill` records (the
snapshot's cost grows with what the stream holds; the hostile tester's stream held 30,000):
  - in memory: no state directory, nothing on disk (the baseline, measured in the same run);
  - write-ahead: the emulator as `appdata up` runs it: each put appended to kinesis.wal and
    fsynced before the answer, the periodic snapshot as before;
  - snapshot per request: the emulator's fallback for a moto its put log disagrees with: the
    whole Kinesis state pickled and fsynced before each answer that changed it.
Each way serves `--calls` PutRecords of 10 records (the API's small POSTs) and of 500 (its largest),
rounds in ABC CBA order; the median of each way's rounds.

    .venv/bin/python bench/bench_emulator_durability.py [--fill 30000] [--calls 100] [--rounds 2]

Last line: put throughput of write-ahead and of snapshot per request, as a ratio of in memory.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import _aws_client, kinesis_entries  # noqa: E402
from appdata.config import AwsEndpoints  # noqa: E402
from appdata.local.emulator import free_port, wait_until_up  # noqa: E402

# The emulator as `appdata emulator --serve kinesis` runs it, the put log's start-up check made to
# fail when asked, so the emulator takes its snapshot-per-request fallback.
SERVER = """
import sys
from pathlib import Path
import appdata.local.emulator as emulator
if sys.argv[3] == "snapshot":
    emulator._kinesis_log_disagreement = lambda: "forced by the benchmark"
server = emulator.make_emulator("127.0.0.1", int(sys.argv[1]), services=("kinesis",),
                                state_dir=Path(sys.argv[2]) if sys.argv[2] else None)
print(server.state_note, flush=True)
emulator.serve_until_signalled(server)
"""
WAYS = {"in memory": "memory", "write-ahead": "log", "snapshot per request": "snapshot"}
SIZES = (10, 500)


def one_round(way: str, fill: int, calls: int) -> dict[int, float]:
    """A fresh emulator the given way, its stream filled; PutRecords/s for each size."""
    port = free_port()
    state = tempfile.mkdtemp(prefix="appdata-bench-durability-") if way != "memory" else ""
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), state, way], stdout=subprocess.PIPE, text=True)
    try:
        note = proc.stdout.readline()
        assert ("snapshot written before each answer" in note) == (way == "snapshot"), note
        assert ("puts logged and fsynced" in note) == (way == "log"), note
        endpoints = AwsEndpoints.everything_at(f"http://127.0.0.1:{port}")
        wait_until_up(endpoints.kinesis)
        kinesis = _aws_client(endpoints, "kinesis")
        kinesis.create_stream(StreamName="bench", ShardCount=1)
        filler = kinesis_entries(500, "fill")
        for _ in range(fill // 500):
            kinesis.put_records(StreamName="bench", Records=filler)
        rates = {}
        for size in SIZES:
            entries = kinesis_entries(size, f"put-{size}")
            started = time.perf_counter()
            for _ in range(calls):
                assert kinesis.put_records(StreamName="bench", Records=entries)["FailedRecordCount"] == 0
            rates[size] = calls / (time.perf_counter() - started)
        return rates
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fill", type=int, default=30_000, help="records in the stream before measuring")
    parser.add_argument("--calls", type=int, default=100, help="PutRecords calls per size and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each way (ABC, then CBA, ...)")
    args = parser.parse_args()
    order = list(WAYS)
    measured: dict[str, list[dict[int, float]]] = {name: [] for name in WAYS}
    for number in range(args.rounds):
        for name in order if number % 2 == 0 else order[::-1]:
            measured[name].append(one_round(WAYS[name], args.fill, args.calls))
    median = {name: {size: statistics.median(r[size] for r in rounds) for size in SIZES}
              for name, rounds in measured.items()}
    print(f"Kinesis PutRecords/s on a stream of {args.fill:,} records ({args.calls} calls per size, "
          f"median of {args.rounds} rounds)")
    for name in WAYS:
        print(f"  {name:<22}" + "  ".join(f"{size:>3} records: {median[name][size]:7.1f} calls/s "
                                           f"({median[name][size] / median['in memory'][size]:.2f}x)"
                                           for size in SIZES))
    ratios = {name: {size: median[name][size] / median["in memory"][size] for size in SIZES}
              for name in ("write-ahead", "snapshot per request")}
    print("durable puts vs in memory: write-ahead " + "/".join(f"{ratios['write-ahead'][s]:.2f}x" for s in SIZES)
          + ", snapshot per request " + "/".join(f"{ratios['snapshot per request'][s]:.2f}x" for s in SIZES)
          + f" (calls of {'/'.join(str(s) for s in SIZES)} records)")


if __name__ == "__main__":
    main()
