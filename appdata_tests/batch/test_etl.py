"""The batch ETL on dirty landing files: good rows load, bad rows are quarantined with row, field
and reason, and a file whose header can't be trusted is refused whole with a clear error."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
from typing import Any
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from appdata import aws
from appdata.batch import etl, lake
from appdata.config import Settings
from appdata.local import batch_demo as demo
from appdata.local.provision import ensure_bucket
from appdata.defs.resources import build_resources
from appdata.contract import layout
from appdata.contract.schema import EVENT_COLUMNS
from appdata.warehouse.loader import create_schema
from appdata_tests.support.events import make_event

DAY = dt.date(2020, 3, 1)


def good_row(i: int, day: dt.date = DAY) -> dict:
    """A valid event as the cells of a landing CSV row (text; every row with a size, one name to spoil)."""
    event = make_event(i, day=day, event_id=f"00000000-0000-4000-8000-{i:012d}", user_id=i + 1,
                       name="Test Person", size_mb=12.5)
    return {column: "" if value is None else str(value) for column, value in event.items()}


def csv_bytes(rows: list[dict], header: list[str] | None = None) -> bytes:
    header = header or list(EVENT_COLUMNS)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(h, "") for h in header])
    return out.getvalue().encode()


def dirty_file() -> tuple[bytes, dict[int, tuple[str | None, str]]]:
    """A landing file with a BOM and bad rows; returns it and {row: (field, reason fragment)}."""
    rows = [good_row(i) for i in range(1, 11)]
    rows[1]["age"] = ""  # row 2: null in a required field
    rows[3]["download_date"] = "03/01/2020"  # row 4: unparseable date
    rows[5]["event_id"] = rows[4]["event_id"]  # row 6: duplicate of row 5
    rows[6]["download_date"] = "2020-03-02"  # row 7: another day's row in this day's file
    lines = csv_bytes(rows).split(b"\n")
    # row 3 shifted right by an inserted empty field (the Kaggle "Life Made WI-Fi" defect)
    lines[3] = lines[3].replace(b",", b",,", 1)
    # row 8 holds bytes that are no UTF-8 (a Latin-1 name)
    lines[8] = lines[8].replace(b"Test Person", b"Jos\xe9 Person")
    body = b"\xef\xbb\xbf" + b"\n".join(lines).rstrip(b"\n")
    body += b"\n00000000-0000-4000-8000-000000000099,12,Trunc"  # row 11: truncated last line, no newline
    expected = {
        2: ("age", "age: is required"),
        3: (None, "row has 21 fields, the header has 20"),
        4: ("download_date", "download_date: is not a date in YYYY-MM-DD form"),
        6: ("event_id", "duplicate"),
        7: ("download_date", "is not the day of this landing file"),
        8: ("name", "name: is not valid UTF-8"),
        11: (None, "row has 3 fields, the header has 20"),
    }
    return body, expected


def run_etl(tmp_path: Path, body: bytes, day: dt.date = DAY) -> etl.DayOutput:
    path = tmp_path / "landing.csv"
    path.write_bytes(body)
    work = etl.WindowETL(tmp_path)
    work.add_day(day, layout.landing_key(day), etl.parse_landing(path, day))
    [out] = work.finish()
    return out


def test_dirty_file_loads_good_rows_and_quarantines_bad_ones_with_row_field_reason(tmp_path):
    body, expected = dirty_file()
    out = run_etl(tmp_path, body)
    assert out.landing_rows == 11
    assert {r["row"]: r["field"] for r in out.rejects} == {row: fld for row, (fld, _) in expected.items()}
    for reject in out.rejects:
        assert expected[reject["row"]][1] in reject["reason"], reject
    curated = pq.read_table(out.parquet_path).to_pandas()
    assert len(curated) == 4 == out.curated_rows
    assert out.landing_rows == out.curated_rows + out.rejected_rows
    assert curated["event_id"].is_unique
    # the BOM did not leak into the first column name or value
    assert curated["event_id"].iloc[0] == "00000000-0000-4000-8000-000000000001"
    assert str(curated["download_date"].iloc[0])[:10] == "2020-03-01"
    assert curated["age"].dtype.kind == "i" and curated["rating"].dtype.kind == "f"


def test_reordered_header_is_read_by_name(tmp_path):
    header = list(reversed(EVENT_COLUMNS))
    out = run_etl(tmp_path, csv_bytes([good_row(1), good_row(2)], header))
    assert (out.curated_rows, out.rejected_rows) == (2, 0)
    assert pq.read_table(out.parquet_path).column("age").to_pylist() == [int(good_row(n)["age"]) for n in (1, 2)]


def test_size_mb_may_be_empty_but_nothing_else(tmp_path):
    row = good_row(1)
    row["size_mb"] = ""
    out = run_etl(tmp_path, csv_bytes([row]))
    assert out.curated_rows == 1
    assert pq.read_table(out.parquet_path).column("size_mb").to_pylist() == [None]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the file is empty"),
        (b"\xef\xbb\xbf\n", "the file is empty"),
        (csv_bytes([good_row(1)]).split(b"\n", 1)[1], "the header is missing"),
        (csv_bytes([good_row(1)], [c for c in EVENT_COLUMNS if c != "user_id"]), "the header lacks user_id"),
        (csv_bytes([good_row(1)], [*EVENT_COLUMNS[:-1], "download_day"]),
         "the header lacks download_date; has unknown columns 'download_day'"),
        (csv_bytes([good_row(1)], [*EVENT_COLUMNS, "age"]), "repeats age"),
        (csv_bytes([good_row(1)]).replace(b",", b";"), "the header is separated by ';', expected ','"),
        (csv_bytes([good_row(1)]).replace(b",", b"\t"), "the header is separated by tabs, expected ','"),
        (csv_bytes([good_row(1)]).replace(b",", b"|"), "the header is separated by '|', expected ','"),
        (csv_bytes([good_row(1)]).decode().encode("utf-16"), "the file is UTF-16 encoded, expected UTF-8"),
        (csv_bytes([good_row(1)]).decode().encode("utf-16-le"), "the file is UTF-16 encoded, expected UTF-8"),
        (csv_bytes([good_row(1)]).decode().encode("utf-32"), "the file is UTF-32 encoded, expected UTF-8"),
        (b"PK\x03\x04\x14\x00\x06\x00", "the file is a ZIP archive"),
        (gzip.compress(csv_bytes([good_row(1)]).replace(b",", b";")), "the header is separated by ';'"),
        (gzip.compress(csv_bytes([good_row(i) for i in range(1, 50)]))[:-40], "gzip-compressed but does not decompress"),
    ],
    ids=["empty", "bom-only", "no-header", "missing-column", "renamed-column", "repeated-column", "semicolons",
         "tabs", "pipes", "utf-16", "utf-16-no-bom", "utf-32", "xlsx", "gzip-semicolons", "gzip-cut-short"],
)
def test_file_with_wrong_or_empty_header_is_refused_with_a_clear_error(tmp_path, body, message):
    path = tmp_path / "landing.csv"
    path.write_bytes(body)
    with pytest.raises(etl.LandingRefused) as caught:
        etl.parse_landing(path, DAY)
    assert message in str(caught.value)
    assert "landing file of 2020-03-01 refused" in str(caught.value)


def test_big_day_is_validated_in_chunks_with_the_same_row_numbers(tmp_path):
    rows = [good_row(i) for i in range(1, 251)]
    rows[180]["rating"] = "7"  # row 181, in the second chunk
    rows[230]["event_id"] = rows[10]["event_id"]  # row 231 duplicates row 11 from the first chunk
    path = tmp_path / "landing.csv"
    path.write_bytes(csv_bytes(rows))
    work = etl.WindowETL(tmp_path, chunk_rows=100)
    work.add_day(DAY, "k", etl.parse_landing(path, DAY))
    [out] = work.finish()
    assert [(r["row"], r["field"]) for r in out.rejects] == [(181, "rating"), (231, "event_id")]
    assert out.curated_rows == 248


# --- files as clients really send them ------------------------------------------------------------

def _ids(out: etl.DayOutput) -> list[str]:
    """event ids of the curated and the rejected rows of a day (what reconciliation compares)."""
    curated = pq.read_table(out.parquet_path).column("event_id").to_pylist()
    return sorted(curated + [r["record"].get("event_id") for r in out.rejects])


def _landing_ids(body: bytes) -> list[str]:
    from appdata.reliability.reconcile import landing_csv_records

    return sorted(record.get("event_id") for record in landing_csv_records(body))


def _spoil(body: bytes, row: int, old: bytes, new: bytes) -> bytes:
    lines = body.split(b"\n")
    assert old in lines[row], (old, lines[row])
    lines[row] = lines[row].replace(old, new, 1)
    return b"\n".join(lines)


@pytest.mark.parametrize(
    ("row", "old", "new", "fld"),
    [
        (3, b"App 3", b'"App 3', "app"),  # mid-row: csv read on to the end of the file
        (3, b",2020-03-01", b',"2020-03-01', "download_date"),  # last field: pyarrow read on too
        (6, b",2020-03-01", b',"2020-03-01', "download_date"),  # the last row, no final line break
        (1, b"Test Person", b'"Test Person', "name"),  # the first row
    ],
    ids=["mid-row", "last-field", "last-row", "first-row"],
)
def test_an_unterminated_quote_loses_only_its_own_row(tmp_path, row, old, new, fld):
    body = csv_bytes([good_row(i) for i in range(1, 7)]).rstrip(b"\n")
    spoiled = _spoil(body, row, old, new)
    out = run_etl(tmp_path, spoiled)
    assert (out.landing_rows, out.curated_rows, out.rejected_rows) == (6, 5, 1)
    [reject] = out.rejects
    assert (reject["row"], reject["field"]) == (row, fld)
    assert "unterminated quote" in reject["reason"] and "only this line is rejected" in reject["reason"]
    assert reject["record"]["event_id"] == good_row(row)["event_id"]
    # reconciliation reads the landing file with the same splitter: 6 rows, the same ids
    assert _landing_ids(spoiled) == _ids(out) == sorted(good_row(i)["event_id"] for i in range(1, 7))


def test_an_unterminated_quote_before_short_lines_still_loses_only_its_line(tmp_path):
    """No later line is a full row on its own (they are all short): the swallowed record has the
    wrong width, so it is split again at its first line break."""
    body = _spoil(csv_bytes([good_row(i) for i in range(1, 4)]), 2, b"App 2", b'"App 2') + b"short,line\nx\n"
    out = run_etl(tmp_path, body)
    assert out.landing_rows == 5 and out.curated_rows == 2
    assert [(r["row"], r["field"]) for r in out.rejects] == [(2, "app"), (4, None), (5, None)]
    assert "row has 2 fields" in out.rejects[1]["reason"]
    assert len(_landing_ids(body)) == 5


def test_a_quoted_value_may_span_lines(tmp_path):
    """A real multi-line value ends a row of the header's width, and its second line is no row on
    its own: it stays one row, value and line break kept."""
    rows = [good_row(i) for i in range(1, 7)]
    rows[2]["app"] = "App\nthree, the sequel"
    rows[5]["current_ver"] = "1.0\r\n(beta)"
    out = run_etl(tmp_path, csv_bytes(rows))
    assert (out.landing_rows, out.curated_rows, out.rejected_rows) == (6, 6, 0)
    curated = pq.read_table(out.parquet_path)
    assert curated.column("app").to_pylist()[2] == "App\nthree, the sequel"
    assert curated.column("current_ver").to_pylist()[5] == "1.0\r\n(beta)"


@pytest.mark.parametrize("name", ["Alice\nforged-1,7,Mallory", "Great\nfun, simple, free"])
def test_a_line_of_a_quoted_value_that_looks_like_a_row_stays_in_its_value(tmp_path, name):
    """The second line of a real multi-line value may hold as many commas as a row: the value
    closes its quote and its row has the header's width, so it is one row, never a forged one."""
    rows = [good_row(i) for i in range(1, 4)]
    rows[1]["name"] = name
    out = run_etl(tmp_path, csv_bytes(rows))
    assert (out.landing_rows, out.curated_rows, out.rejected_rows) == (3, 3, 0)
    assert pq.read_table(out.parquet_path).column("name").to_pylist()[1] == name
    assert _landing_ids(csv_bytes(rows)) == sorted(r["event_id"] for r in rows)


def test_no_field_size_crashes_the_parsers_or_the_reconciliation(tmp_path):
    """Over csv's 131,072-character field limit (which crashed the tolerant parser and
    batch_reconciled), and over the parser's own 1 MiB line cap, each row is rejected alone,
    its field named; the neighbours load. With a shifted row the file takes the tolerant parser."""
    rows = [good_row(i) for i in range(1, 8)]
    rows[1]["name"] = "n" * 200_000  # row 2: over csv's field limit; the contract's 1,024 says no
    rows[3]["app"] = "a" * (etl.MAX_LINE_CHARS + 10)  # row 4: a line over the cap
    for shifted in (False, True):
        body = csv_bytes(rows)
        if shifted:
            body = _spoil(body, 6, b"App 6,", b"App 6,,")  # row 6 has 21 fields
        out = run_etl(tmp_path, body)
        by_row = {r["row"]: r for r in out.rejects}
        assert out.parser == ("python" if shifted else "arrow")
        assert set(by_row) == ({2, 4, 6} if shifted else {2, 4})
        assert out.landing_rows == 7 and out.curated_rows == 7 - len(by_row)
        assert by_row[2]["field"] == "name" and "longer than" in by_row[2]["reason"]
        assert by_row[4]["field"] == "app"
        if shifted:  # the tolerant parser rejects the over-long line unread, its values cut short
            assert f"{etl.MAX_LINE_CHARS:,} characters long or more" in by_row[4]["reason"]
            assert len(by_row[4]["record"]["app"]) == etl.KEPT_CHARS
            assert by_row[4]["record"]["event_id"] == good_row(4)["event_id"]
        assert _landing_ids(body) == _ids(out)


def test_nul_in_a_value_is_rejected_not_sent_to_the_warehouse(tmp_path):
    """pyarrow reads NUL as text; the pre-screen must not call such a row certainly valid, so
    validate_records rejects it (PostgreSQL would refuse the whole load)."""
    import pyarrow as pa

    rows = [good_row(i) for i in range(1, 6)]
    rows[1]["name"] = "Jo\x00e"
    rows[3]["event_id"] = "id-with-\x00"
    table = pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in EVENT_COLUMNS})
    _, certain = etl.fast_validate(table)
    assert certain.tolist() == [True, False, True, False, True]
    out = run_etl(tmp_path, csv_bytes(rows))
    assert out.parser == "arrow"
    assert {r["row"]: (r["field"], r["reason"]) for r in out.rejects} == {
        2: ("name", "name: contains a NUL character"), 4: ("event_id", "event_id: contains a NUL character")}
    assert out.curated_rows == 3


def test_gzip_drops_are_read_like_csv(tmp_path):
    body, _ = dirty_file()
    for name in ("plain", "gz", "two"):
        (tmp_path / name).mkdir()
    plain = run_etl(tmp_path / "plain", body)
    packed = gzip.compress(body)
    assert packed[:2] == etl.GZIP_MAGIC
    out = run_etl(tmp_path / "gz", packed)
    assert [(r["row"], r["field"], r["reason"]) for r in out.rejects] == \
        [(r["row"], r["field"], r["reason"]) for r in plain.rejects]
    assert (out.landing_rows, out.curated_rows) == (plain.landing_rows, plain.curated_rows) == (11, 4)
    assert pq.read_table(out.parquet_path).equals(pq.read_table(plain.parquet_path))
    assert sorted(p.name for p in (tmp_path / "gz").iterdir()) == [f"{DAY.isoformat()}.parquet", "landing.csv"]
    assert _landing_ids(packed) == _ids(out)  # reconciliation decompresses too
    # two gzip members (a client compressing in parts) are one file
    clean = csv_bytes([good_row(i) for i in range(1, 5)])
    cut = clean.index(b"\n", len(clean) // 2) + 1
    two = run_etl(tmp_path / "two", gzip.compress(clean[:cut]) + gzip.compress(clean[cut:]))
    assert (two.landing_rows, two.curated_rows) == (4, 4)
    assert _landing_ids(gzip.compress(clean[:cut]) + gzip.compress(clean[cut:])) == _ids(two)


# --- through the Dagster assets, on the emulator -------------------------------------------------

def _materialize(resources, selection):
    return demo.materialize_range(DAY, DAY, resources, instance=dg.DagsterInstance.ephemeral(),
                                  selection=selection, raise_on_error=False)



def _batch_sinks(warehouse_url: str, monkeypatch) -> tuple[dict, Any, str]:
    """Resources on `warehouse_url` with the bucket and warehouse schema in place: (resources, s3 client, bucket)."""
    monkeypatch.setenv("APPDATA_WAREHOUSE_URL", warehouse_url)
    resources = build_resources(Settings.from_env())
    ensure_bucket(resources["s3"])
    with resources["warehouse"].connect() as engine:
        create_schema(engine)
    return resources, resources["s3"].get_client(), resources["s3"].bucket


def test_curated_asset_writes_dead_letters_and_loads_only_good_rows(appdata_env, duckdb_url, monkeypatch):
    resources, s3, bucket = _batch_sinks(duckdb_url, monkeypatch)
    engine = resources["warehouse"].get_engine()
    body, expected = dirty_file()
    s3.put_object(Bucket=bucket, Key=layout.landing_key(DAY), Body=body)

    result = _materialize(resources, ["curated_batch", "downloads_batch"])
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())

    letters = []
    for key in aws.list_keys(s3, bucket, "rejected/batch/"):
        letters += [(key, json.loads(line)) for line in lake.get_bytes(s3, bucket, key).splitlines()]
    assert {letter["row"] for _, letter in letters} == set(expected)
    for key, letter in letters:
        assert letter["source"] == "batch"
        assert letter["landing_key"] == layout.landing_key(DAY)
        assert expected[letter["row"]][1] in letter["reason"]
        assert dt.datetime.fromisoformat(letter["rejected_at"]).tzinfo is not None
        assert isinstance(letter["record"], dict)
        # filed under the record's own download_date when it parses, else the landing day
        filed = "2020-03-02" if letter["row"] == 7 else "2020-03-01"
        assert key == f"rejected/batch/download_date={filed}/users_app_batch_client_data-2020-03-01.jsonl"
    with engine.connect() as conn:
        loaded = conn.execute(sa.text("SELECT COUNT(*) FROM downloads_batch")).scalar_one()
    assert loaded == 4

    # The client re-drops a clean file: the stale dead letters go, the warehouse day is replaced.
    s3.put_object(Bucket=bucket, Key=layout.landing_key(DAY), Body=csv_bytes([good_row(i) for i in range(1, 6)]))
    assert _materialize(resources, ["curated_batch", "downloads_batch"]).success
    assert list(aws.list_keys(s3, bucket, "rejected/batch/")) == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM downloads_batch")).scalar_one() == 5
    engine.dispose()


def test_curated_asset_refuses_a_headerless_file_and_loads_nothing(appdata_env, duckdb_url, monkeypatch):
    resources, s3, bucket = _batch_sinks(duckdb_url, monkeypatch)
    headerless = csv_bytes([good_row(1), good_row(2)]).split(b"\n", 1)[1]
    s3.put_object(Bucket=bucket, Key=layout.landing_key(DAY), Body=headerless)

    result = _materialize(resources, ["curated_batch", "downloads_batch"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.user_failure_data.description
    assert "1 landing file(s) refused" in message and "2020-03-01: the header is missing" in message
    assert list(aws.list_keys(s3, bucket, "curated/batch/")) == []
    assert not any(e.event_type_value == "STEP_START" and e.step_key == "downloads_batch" for e in result.all_events)


def _failure_message(result) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.step_failure_data.user_failure_data.description


def test_a_gzip_drop_is_loaded_and_reconciles_and_two_drops_are_refused(appdata_env, duckdb_url, monkeypatch):
    """The client compresses: users_app_batch_client_data.csv.gz is the day's drop, read like the
    CSV, its dead letters naming it, and reconciliation counts its rows. A day holding both the
    .csv and the .csv.gz is refused (which one is current?)."""
    from appdata.reliability.reconcile import reconcile_batch

    resources, s3, bucket = _batch_sinks(duckdb_url, monkeypatch)
    engine = resources["warehouse"].get_engine()
    body, expected = dirty_file()
    plain_key, gz_key = layout.landing_drop_keys(DAY)
    assert gz_key == plain_key + ".gz"
    s3.put_object(Bucket=bucket, Key=gz_key, Body=gzip.compress(body))

    result = _materialize(resources, ["curated_batch", "downloads_batch"])
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    letters = [json.loads(line) for key in aws.list_keys(s3, bucket, "rejected/batch/")
               for line in lake.get_bytes(s3, bucket, key).splitlines()]
    assert {letter["row"] for letter in letters} == set(expected)
    assert {letter["landing_key"] for letter in letters} == {gz_key}
    (day,) = reconcile_batch(s3=s3, bucket=bucket, engine=engine, days=[DAY.isoformat()])
    assert day.ok, day.describe()
    assert day.counts == {"landing": 11, "curated": 4, "rejected": 7, "downloads_batch": 4}

    s3.put_object(Bucket=bucket, Key=plain_key, Body=csv_bytes([good_row(1)]))
    result = _materialize(resources, ["curated_batch", "downloads_batch"])
    assert not result.success
    message = _failure_message(result)
    assert "1 landing file(s) refused" in message and "the day has two client drops" in message
    assert plain_key in message and gz_key in message
    engine.dispose()


def test_nul_in_a_value_is_a_dead_letter_not_a_failed_postgresql_load(appdata_env, postgres_url, monkeypatch):
    """PostgreSQL refuses NUL in text: the row is rejected with its reason, the rest of the day loads."""
    resources, s3, bucket = _batch_sinks(postgres_url, monkeypatch)
    engine = resources["warehouse"].get_engine()
    rows = [good_row(i) for i in range(1, 6)]
    rows[2]["name"] = "Jo\x00e"
    s3.put_object(Bucket=bucket, Key=layout.landing_key(DAY), Body=csv_bytes(rows))

    result = _materialize(resources, ["curated_batch", "downloads_batch"])
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    [key] = list(aws.list_keys(s3, bucket, "rejected/batch/"))
    [letter] = [json.loads(line) for line in lake.get_bytes(s3, bucket, key).splitlines()]
    assert (letter["row"], letter["field"], letter["reason"]) == (3, "name", "name: contains a NUL character")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM downloads_batch")).scalar_one() == 4
    engine.dispose()


def test_progress_lines_and_metadata_count_the_rows_really_processed(appdata_env, duckdb_url, monkeypatch):
    """A 5-day window as one run, a progress line every 2 days, validation every 8 rows: each line
    counts what was really read / curated / rejected so far (never `5/5 days, 0 rows`), and the
    last lines and the metadata equal the rows in the files and in the warehouse."""
    import re

    import pyarrow as pa

    from appdata.defs.batch import assets
    from appdata.sources.client_files import batch_day_path

    monkeypatch.setenv("APPDATA_WAREHOUSE_URL", duckdb_url)
    monkeypatch.setattr(assets, "PROGRESS_EVERY", 2)
    monkeypatch.setattr(etl, "CHUNK_ROWS", 8)
    settings = Settings.from_env()
    resources = build_resources(settings)
    ensure_bucket(resources["s3"])
    engine = resources["warehouse"].get_engine()
    create_schema(engine)
    days = [DAY + dt.timedelta(days=i) for i in range(5)]
    landing, rejected = [], []
    for index, day in enumerate(days):
        rows = [good_row(100 * index + k, day) for k in range(1, 5 + 3 * index)]
        if index == 1:
            rows[2]["age"] = ""  # required
        if index == 3:
            rows[4]["rating"] = "7"  # out of range
            rows[6]["event_id"] = rows[5]["event_id"]  # duplicate
        path = batch_day_path(settings.client_dir, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({c: [r[c] for r in rows] for c in EVENT_COLUMNS}), path)
        landing.append(len(rows))
        rejected.append({1: 1, 3: 2}.get(index, 0))
    curated = [n - r for n, r in zip(landing, rejected)]
    assert landing == [4, 7, 10, 13, 16]

    instance = dg.DagsterInstance.ephemeral()
    result = demo.materialize_range(days[0], days[-1], resources, instance=instance,
                                    selection=["landing_batch", "curated_batch", "downloads_batch"])
    assert result.success
    lines: dict[str, list[tuple[int, dict[str, int]]]] = {}
    for entry in instance.all_logs(result.run_id):
        found = re.match(r"^(landing|curated|warehouse read): (\d+)/5 days, (.*), [\d.]+s$", entry.user_message or "")
        if found:
            counts = {label: int(n.replace(",", "")) for n, label in re.findall(r"([\d,]+) ([a-z ]+?)(?=,|$)", found[3])}
            lines.setdefault(found[1], []).append((int(found[2]), counts))

    def upto(values, number):
        return sum(values[:number])

    assert lines["landing"] == [(n, {"rows written": upto(landing, n)}) for n in (2, 4, 5)]
    assert lines["warehouse read"] == [(n, {"rows read": upto(curated, n)}) for n in (2, 4, 5)]
    assert [n for n, _ in lines["curated"]] == [2, 4, 5]
    for number, counts in lines["curated"]:
        assert counts["rows read"] == upto(landing, number)
        assert counts["curated"] + counts["rejected"] + counts["awaiting validation"] == counts["rows read"]
        assert counts["curated"] <= upto(curated, number) and counts["rejected"] <= upto(rejected, number)
    assert any(0 < counts["curated"] for number, counts in lines["curated"] if number < 5)  # validated on the way
    assert lines["curated"][-1][1] == {"rows read": 50, "curated": 47, "rejected": 3, "awaiting validation": 0}

    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["landing_batch"]["dagster/row_count"].value == sum(landing)
    assert meta["curated_batch"]["dagster/row_count"].value == sum(curated) == 47
    assert meta["curated_batch"]["landing_rows"].value == sum(landing)
    assert meta["curated_batch"]["rejected_rows"].value == sum(rejected)
    assert meta["curated_batch"]["rows_per_partition"].value == {d.isoformat(): n for d, n in zip(days, curated)}
    assert meta["downloads_batch"]["dagster/row_count"].value == sum(curated)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM downloads_batch")).scalar_one() == 47
    engine.dispose()
    instance.dispose()


TRICKY = {
    "event_id": ["abc", " abc", "abc ", "NaN", "null", "N/A", "", "\u00a0x", "x\x1f", "Ünï", "a\x00b", "\x00",
                 "e" * 128, "e" * 129],
    "name": ["x" * 1024, "x" * 1025, "line\nbreak", "é" * 1024, "é" * 1025, "\x00x"],
    "user_id": ["1", "0", "-3", "007", "1.0", "1e3", " 5", "+5", "999999999999999", "x", ""],
    "age": ["13", "12", "120", "121", "30.5", "30"],
    "rating": ["1", "5", "5.01", "4.10", ".5", "4.", "1e0", "NaN", "inf"],
    "size_mb": ["", "nan", "None", " NA ", "12.5", "-1", "10000", "10000.5", "Varies with device"],
    "type": ["Free", "Paid", "free", " Free"],
    "last_updated": ["2018-07-01", "2018-7-1", "2018-02-30", "2007-12-31", "2018-07-01T00:00", "01/07/2018"],
    "download_date": ["2020-03-01", "2020-3-01", "2999-01-01", ""],
}


def test_fast_prescreen_only_accepts_what_validate_records_accepts_with_the_same_values():
    """The vectorized pre-screen is an optimization: it must never accept a row, or type a value,
    differently from appdata.contract.schema.validate_records."""
    import pyarrow as pa

    from appdata.contract.schema import validate_records

    rows = []
    for fld, values in TRICKY.items():
        for value in values:
            row = good_row(len(rows) + 1)
            row[fld] = value
            rows.append(row)
    table = pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in EVENT_COLUMNS})
    typed, certain = etl.fast_validate(table)
    checked = validate_records(table.to_pandas(), first_row=0)
    rejected = set(checked.rejected["row"])
    accepted_positions = [i for i in range(len(rows)) if i not in rejected]
    valid = pa.Table.from_pandas(checked.valid, schema=etl.CURATED_SCHEMA, preserve_index=False)
    slow_by_position = dict(zip(accepted_positions, valid.to_pylist()))
    fast_rows = typed.to_pylist()
    for position, fast_row in zip([i for i in range(len(rows)) if certain[i]], fast_rows):
        assert position in slow_by_position, f"pre-screen accepted a row validate_records rejects: {rows[position]}"
        assert fast_row == slow_by_position[position], rows[position]
    assert certain.sum() >= len(TRICKY)  # the plain values do take the fast path


def test_well_shaped_but_impossible_dates_are_rejected_not_crashing_the_etl(tmp_path):
    """'2018-13-01' has the YYYY-MM-DD shape but no month 13: the pre-screen can't read it, so
    validate_records decides (this crashed the pre-screen before); rolled-over days are caught too."""
    bad = {2: "2018-13-01", 3: "2018-00-10", 4: "2018-01-00", 5: "2018-02-30", 6: "2017-02-29"}
    rows = [good_row(i) for i in range(1, 9)]
    for row, value in bad.items():
        rows[row - 1]["last_updated"] = value
    rows[6]["last_updated"] = "2016-02-29"  # a real leap day stays
    out = run_etl(tmp_path, csv_bytes(rows))
    assert {r["row"]: r["field"] for r in out.rejects} == {row: "last_updated" for row in bad}
    assert out.curated_rows == 3 and out.landing_rows == 8
