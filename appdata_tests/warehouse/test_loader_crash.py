"""A batch partition load killed at points the test chooses (mid-transaction, mid-COPY, around the
COMMIT): no reader ever sees a half-loaded day, and a resumed load leaves exactly the day's rows
(real PostgreSQL, the loader's transaction). No sleep decides anything: the same kills, the same
verdict on any machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from appdata_tests.support.reliability import report, scale

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

DAY = "2022-09-01"
ROWS = 20_000
KILLED = 86  # the exit code of a load stopped at its kill point

# The loader (replace_range, run `argv[4]` times in a row), with kill points counted in this process:
#   delete.after  the DELETE of the day ran, its transaction open
#   copy.half     half of the COPY data sent to the server (psycopg2 reads the buffer through our cursor)
#   commit.before the COPY done, COMMIT not sent (SQLAlchemy's commit event)
#   commit.after  the COMMIT returned (dialect.do_commit wrapped)
# At "<point>:<n>" (its n-th occurrence) the loader says where it is and which PostgreSQL backend it
# uses, waits until the test has looked at the table from another connection (stdin closed), then
# os._exit()s: no rollback, no cleanup, the server just loses the client mid-transaction.
LOAD_SCRIPT = """
import datetime as dt, json, os, sys, time
import psycopg2.extensions
import sqlalchemy as sa
from appdata.contract import schema
from appdata.warehouse.loader import create_schema, replace_range
sys.path.insert(0, sys.argv[3])
from appdata_tests.support.events import make_event

KILL_AT = os.environ.get("APPDATA_TEST_KILL_AT", "")
counts = {}
started = time.monotonic()

def reached(point, dbapi_connection):
    counts[point] = counts.get(point, 0) + 1
    if KILL_AT == f"{point}:{counts[point]}":
        print("at " + json.dumps({"at": KILL_AT, "counts": counts, "backend": dbapi_connection.get_backend_pid(),
                                  "seconds": round(time.monotonic() - started, 2)}), flush=True)
        sys.stdin.read()  # the test looks at the warehouse, then closes our stdin
        os._exit(%(killed)d)

class HalfWatch:
    def __init__(self, file, connection):
        self.file, self.connection, self.total, self.told = file, connection, len(file.getvalue()), False
    def read(self, size=-1):
        chunk = self.file.read(size)
        if not self.told and 2 * self.file.tell() >= self.total:
            self.told = True
            reached("copy.half", self.connection)
        return chunk

class Cursor(psycopg2.extensions.cursor):
    def copy_expert(self, sql, file, size=8192):
        return super().copy_expert(sql, HalfWatch(file, self.connection), size)

engine = sa.create_engine(sys.argv[1], connect_args={"cursor_factory": Cursor}); create_schema(engine)

@sa.event.listens_for(engine, "after_cursor_execute")
def after_statement(conn, cursor, statement, parameters, context, executemany):
    if statement.lstrip().upper().startswith("DELETE"):
        reached("delete.after", conn.connection.dbapi_connection)

@sa.event.listens_for(engine, "commit")
def before_commit(conn):
    reached("commit.before", conn.connection.dbapi_connection)

do_commit = engine.dialect.do_commit
def commit_then_count(dbapi_connection):
    do_commit(dbapi_connection)
    reached("commit.after", dbapi_connection)
engine.dialect.do_commit = commit_then_count

day = dt.date.fromisoformat(sys.argv[2])
frame = schema.validate_records(schema.records_to_frame(
    [dict(make_event(i, day=sys.argv[2]), event_id=f"crash-{i}") for i in range(%(rows)d)])).valid
for _ in range(int(sys.argv[4])):
    replace_range(engine, "downloads_batch", frame, column="download_date", start=day, end=day + dt.timedelta(days=1))
print("loaded " + json.dumps({"counts": counts, "seconds": round(time.monotonic() - started, 2)}), flush=True)
""" % {"killed": KILLED, "rows": ROWS}

# What the killed load's own backend is doing at each point (pg_stat_activity: state, query's first word).
BACKEND_AT = {"delete.after": ("idle in transaction", "DELETE"), "copy.half": ("active", "COPY"),
              "commit.before": ("idle in transaction", "COPY"), "commit.after": ("idle", "COMMIT")}


def _load_killed_at(point: str, postgres_url: str, repo: str, engine: sa.Engine, day_rows, stderr_path) -> dict:
    """Run the loader until `point`; there, while it is frozen, count the day's rows from another
    connection and read its backend's state; then let it die. What it said, saw and how it ended."""
    with open(stderr_path, "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT, postgres_url, DAY, repo, "50"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "APPDATA_TEST_KILL_AT": point})
        try:
            line = proc.stdout.readline()  # blocks until the loader is at its kill point (or ends)
            if not line.startswith("at "):
                proc.wait(timeout=300)
                err.seek(0)
                pytest.fail(f"the load did not stop at {point}: exit {proc.returncode}, said {line!r}\n"
                            f"{err.read()[-2000:]}")
            said = json.loads(line[3:])
            rows = day_rows()
            with engine.connect() as conn:
                state, query = conn.execute(sa.text("SELECT state, query FROM pg_stat_activity WHERE pid = :p"),
                                            {"p": said["backend"]}).one()
            proc.stdin.close()
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {**said, "rows": rows, "state": state, "query": query.split()[0].upper(), "code": code}


def _backends_gone(engine: sa.Engine, pids: list[int], seconds: float = 60) -> bool:
    """The server ends a vanished client's backend (rolling its transaction back) on its own."""
    deadline = time.monotonic() + seconds
    while True:
        with engine.connect() as conn:
            alive = conn.execute(sa.text("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ANY(:p)"),
                                 {"p": pids}).scalar_one()
        if alive == 0 or time.monotonic() > deadline:
            return alive == 0
        time.sleep(0.05)


def test_killed_partition_loads_never_show_half_a_day(postgres_url, tmp_path):
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    engine = sa.create_engine(postgres_url)
    seen: set[int] = set()
    stop = threading.Event()

    def day_rows() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT COUNT(*) FROM downloads_batch WHERE download_date = :d"),
                                    {"d": DAY}).scalar_one())

    def reader() -> None:  # polls all along, besides the looks taken at each kill point
        while not stop.is_set():
            try:
                seen.add(day_rows())
            except sa.exc.ProgrammingError:
                pass  # the table is not created yet
            time.sleep(0.01)

    # (kill point, rows committed for the day when it is reached): first over an empty day, then
    # replacing a full one; ":2" and up are later loads of the same process.
    plan = [("delete.after:1", 0), ("copy.half:1", 0), ("commit.before:1", 0), ("commit.after:1", ROWS),
            ("delete.after:1", ROWS), ("copy.half:1", ROWS), ("commit.before:2", ROWS),
            *scale([], [("copy.half:3", ROWS), ("delete.after:4", ROWS), ("commit.after:5", ROWS)])]
    watcher = threading.Thread(target=reader)
    watcher.start()
    looks: list[str] = []
    backends: list[int] = []
    try:
        for point, committed in plan:
            started = time.monotonic()
            got = _load_killed_at(point, postgres_url, repo, engine, day_rows, tmp_path / "stderr")
            seen.add(got["rows"])
            backends.append(got["backend"])
            assert got["at"] == point and got["code"] == KILLED, got
            assert got["rows"] == committed, f"at {point} another connection saw {got['rows']} rows, not {committed}"
            assert (got["state"], got["query"]) == BACKEND_AT[point.split(":")[0]], got
            looks.append(f"{point}={got['rows']}/{time.monotonic() - started:.1f}s")
        started = time.monotonic()
        final = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, postgres_url, DAY, repo, "1"],
                               capture_output=True, text=True, timeout=300)
        final_seconds = time.monotonic() - started
        assert final.returncode == 0, final.stderr[-2000:]
        deadline = time.monotonic() + 60  # the reader polls every 10 ms: wait until it saw the final day
        while ROWS not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        watcher.join()
    with engine.connect() as conn:
        count, distinct = conn.execute(sa.text("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM downloads_batch "
                                               "WHERE download_date = :d"), {"d": DAY}).one()
    assert _backends_gone(engine, backends), "a killed load's backend is still there"
    engine.dispose()
    assert seen <= {0, ROWS}, f"a reader saw a half-loaded day: {sorted(seen)}"
    assert {0, ROWS} <= seen
    assert (count, distinct) == (ROWS, ROWS)
    report("crash (batch partition load killed at chosen points)", rows=ROWS, kills=len(plan), exit_code=KILLED,
           looks=" ".join(looks), final=f"{final_seconds:.1f}s", reader_counts=sorted(seen), final_rows=count)
