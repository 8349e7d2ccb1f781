"""schema.validate_records on an API batch (500 JSON records) and on a 100k-row CSV frame,
vs the pandas-only implementation (schema._validate_vectorized, the validator as it was before
the per-value path), in the same run. Also the API's other per-batch costs.

    /tmp/v/bin/python bench/bench_validate.py [--repeat 7]

Last line: the ratio new/old on 500 rows (lower is faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from appdata.contract import schema  # noqa: E402
from appdata_tests.support.events import make_event  # noqa: E402


def best_ms(fn, repeat: int) -> float:
    """Median of `repeat` timed calls after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def api_records(count: int) -> list[dict]:
    """As clients POST them (JSON values), 1 in 100 invalid."""
    events = [make_event(i, event_id=f"e{i}") for i in range(count)]
    for i in range(0, count, 100):
        events[i]["age"] = 5 if i % 200 else "abc"
        events[i]["download_date"] = "7-Jan-18"
    return events


def csv_frame(count: int) -> pd.DataFrame:
    """As the batch ETL hands rows over: every cell a string."""
    frame = schema.records_to_frame(api_records(count))
    return frame.map(lambda v: None if v is None else str(v)).astype("str")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    records = api_records(500)
    frame = schema.records_to_frame(records)
    new = best_ms(lambda: schema.validate_records(frame, first_row=0), args.repeat)
    old = best_ms(lambda: schema._validate_vectorized(frame.reset_index(drop=True), 0), args.repeat)
    print(f"500 JSON records: validate_records {new:.1f} ms, pandas-only {old:.1f} ms")
    valid = schema.validate_records(frame).valid
    print(f"  per 500 records: records_to_frame {best_ms(lambda: schema.records_to_frame(records), args.repeat):.1f} ms,"
          f" frame_to_records {best_ms(lambda: schema.frame_to_records(valid), args.repeat):.1f} ms,"
          f" derive_event_id x500 {best_ms(lambda: [schema.derive_event_id(r) for r in records], args.repeat):.1f} ms")

    for rows in (2_000, 100_000):
        big = csv_frame(rows)
        repeat = args.repeat if rows <= 2_000 else 3
        whole = best_ms(lambda: schema.validate_records(big, first_row=1), repeat)
        pandas_only = best_ms(lambda: schema._validate_vectorized(big.reset_index(drop=True), 1), repeat)
        per_value = best_ms(lambda: schema._validate_small(big.reset_index(drop=True), 1), repeat)
        print(f"{rows:,}-row CSV frame: validate_records {whole:,.0f} ms, pandas-only {pandas_only:,.0f} ms "
              f"(ratio {whole / pandas_only:.2f}); per-value path forced {per_value:,.0f} ms "
              f"(threshold SMALL_FRAME_ROWS={schema.SMALL_FRAME_ROWS:,})")
    print(f"ratio new/old on 500 rows = {new / old:.3f} ({old / new:.1f}x faster)")


if __name__ == "__main__":
    main()
