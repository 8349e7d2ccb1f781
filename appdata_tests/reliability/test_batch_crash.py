"""A batch partition load SIGKILLed at random points: no reader ever sees a half-loaded day,
and a resumed load leaves exactly the day's rows (real PostgreSQL, the loader's transaction)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from appdata_tests.reliability.conftest import report, scale

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

DAY = "2022-09-01"
ROWS = 20_000

LOAD_SCRIPT = """
import datetime as dt, sys
import sqlalchemy as sa
from appdata import schema
from appdata.warehouse.loader import create_schema, replace_range
sys.path.insert(0, sys.argv[3])
from appdata_tests.reliability.conftest import make_record
engine = sa.create_engine(sys.argv[1]); create_schema(engine)
day = dt.date.fromisoformat(sys.argv[2])
frame = schema.validate_records(schema.records_to_frame(
    [dict(make_record(i, day=sys.argv[2]), event_id=f"crash-{i}") for i in range(%d)])).valid
print("ready", flush=True)
for _ in range(int(sys.argv[4])):
    replace_range(engine, "downloads_batch", frame, column="download_date", start=day, end=day + dt.timedelta(days=1))
print("loaded", flush=True)
""" % ROWS


def test_killed_partition_loads_never_show_half_a_day(postgres_url):
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    engine = sa.create_engine(postgres_url)
    seen: set[int] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                with engine.connect() as conn:
                    seen.add(int(conn.execute(sa.text(
                        "SELECT COUNT(*) FROM downloads_batch WHERE download_date = :d"), {"d": DAY}).scalar_one()))
            except sa.exc.ProgrammingError:
                pass  # the table is not created yet
            time.sleep(0.01)

    watcher = threading.Thread(target=reader)
    watcher.start()
    rng = random.Random(11)
    kills = scale(3, 10)
    killed = 0
    try:
        for _ in range(kills):
            proc = subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT, postgres_url, DAY, repo, "50"],
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 1.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait()
        final = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, postgres_url, DAY, repo, "1"],
                               capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr[-2000:]
    finally:
        stop.set()
        watcher.join()
    with engine.connect() as conn:
        count, distinct = conn.execute(sa.text("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM downloads_batch "
                                               "WHERE download_date = :d"), {"d": DAY}).one()
    engine.dispose()
    assert seen <= {0, ROWS}, f"a reader saw a half-loaded day: {sorted(seen)}"
    assert ROWS in seen and killed >= 1
    assert (count, distinct) == (ROWS, ROWS)
    report("crash (batch partition load SIGKILL)", rows=ROWS, kill_attempts=kills, killed_mid_load=killed,
           reader_counts=sorted(seen), final_rows=count)
