"""Bad batch drops through the real ETL: good rows loaded, bad rows quarantined with reasons,
or the whole file refused with a clear error when its header or encoding can't be trusted;
every loaded day still reconciles by event id (landing = curated + rejected = warehouse)."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json

import pytest

from appdata.reliability.reconcile import reconcile_batch
from appdata_tests.support.reliability import report

pytestmark = pytest.mark.reliability

CASES = ["byte order mark", "shifted rows", "reordered header", "excel dates", "truncated last line",
         "non-utf8 bytes", "unterminated quote", "oversize fields", "nul in a value", "gzip drop",
         "empty file", "missing header", "semicolons", "tabs", "utf-16"]
DAYS = [(dt.date(2022, 2, 1) + dt.timedelta(days=i)).isoformat() for i in range(len(CASES))]
REFUSED = {"empty file": "the file is empty", "missing header": "the header is missing",
           "semicolons": "the header is separated by ';', expected ','",
           "tabs": "the header is separated by tabs, expected ','",
           "utf-16": "the file is UTF-16 encoded, expected UTF-8"}


def _landing_key(day: str) -> str:
    return f"landing/batch/download_date={day}/users_app_batch_client_data.csv"


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def corrupt(case: str, clean: bytes) -> tuple[bytes, int]:
    """The clean drop spoiled one way; returns the bytes and how many rows must be rejected."""
    rows = _rows(clean.decode())
    header, data = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    if case == "byte order mark":
        return b"\xef\xbb\xbf" + clean, 0
    if case == "shifted rows":  # a value missing mid-row: everything after it moves one column left
        for row in data[2:4]:
            del row[col["category"]]
        return _csv([header] + data).encode(), 2
    if case == "reordered header":
        order = list(reversed(range(len(header))))
        return _csv([[r[i] for i in order] for r in rows]).encode(), 0
    if case == "excel dates":
        for row in data[1:4]:
            row[col["download_date"]] = dt.date.fromisoformat(row[col["download_date"]]).strftime("%-d-%b-%y")
        return _csv([header] + data).encode(), 3
    if case == "truncated last line":
        text = _csv([header] + data)
        return text[: len(text) - len(_csv([data[-1]])) // 2].encode(), 1
    if case == "non-utf8 bytes":
        data[5][col["name"]] = "@@BAD@@"
        return _csv([header] + data).encode().replace(b"@@BAD@@", b"Jos\xe9 \xff\xfe"), 1
    if case == "unterminated quote":  # used to swallow every following row into one dead letter
        data[2][col["app"]] = "@@QUOTE@@"
        return _csv([header] + data).encode().replace(b"@@QUOTE@@", b'"Half quoted app'), 1
    if case == "oversize fields":  # over csv's 131,072-character field limit, and over a 1 MiB line
        data[1][col["name"]] = "n" * 200_000
        data[4][col["app"]] = "a" * 1_100_000
        del data[6][col["category"]]  # a shifted row too: the file takes the tolerant parser
        return _csv([header] + data).encode(), 3
    if case == "nul in a value":
        data[3][col["name"]] = "Jo\x00e"
        return _csv([header] + data).encode(), 1
    if case == "gzip drop":
        return gzip.compress(clean), 0
    if case == "empty file":
        return b"", -1
    if case == "missing header":
        return _csv(data).encode(), -1
    if case == "semicolons":
        return _csv(rows).replace(",", ";").encode(), -1
    if case == "tabs":
        return _csv(rows).replace(",", "\t").encode(), -1
    if case == "utf-16":
        return clean.decode().encode("utf-16"), -1
    raise AssertionError(case)


def test_bad_drops_load_good_rows_quarantine_bad_ones_or_refuse_the_file(batch_world):
    settings = batch_world.settings
    s3 = batch_world.resources["s3"].get_client()
    batch_world.load(DAYS[0], DAYS[-1])  # the client's clean drops, loaded once
    expected_rejects: dict[str, int] = {}
    for day, case in zip(DAYS, CASES):
        key = _landing_key(day)
        clean = s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
        spoiled, rejects = corrupt(case, clean)
        if case == "gzip drop":  # the client's drop is users_app_batch_client_data.csv.gz instead
            s3.delete_object(Bucket=settings.bucket, Key=key)
            key += ".gz"
        s3.put_object(Bucket=settings.bucket, Key=key, Body=spoiled)
        expected_rejects[day] = rejects

    row_level = [d for d in DAYS if expected_rejects[d] >= 0]
    refused = [d for d in DAYS if expected_rejects[d] < 0]
    # Refused files fail their run with a clear error naming the day and why; nothing of them loads.
    failed = batch_world.run([batch_world.curated, batch_world.warehouse], refused[0], refused[-1], ok=False)
    failure = failed.failure_data_for_node("curated_batch")
    message = failure.user_failure_data.description if failure.user_failure_data else failure.error.message
    assert f"{len(REFUSED)} landing file(s) refused" in message
    for day in refused:
        assert f"{day}: {REFUSED[CASES[DAYS.index(day)]]}" in message, (CASES[DAYS.index(day)], message)

    # Row-level damage: one run over the six days loads the good rows and quarantines the bad ones.
    batch_world.run([batch_world.curated, batch_world.warehouse], row_level[0], row_level[-1])
    engine = batch_world.resources["warehouse"].get_engine()
    results = reconcile_batch(s3=s3, bucket=settings.bucket, engine=engine, days=row_level)
    engine.dispose()
    for day, result in zip(row_level, results):
        assert result.ok, result.describe()
        assert result.counts["rejected"] == expected_rejects[day], (CASES[DAYS.index(day)], result.counts)
        assert result.counts["curated"] == result.counts["landing"] - expected_rejects[day]
        assert result.counts["downloads_batch"] == result.counts["curated"] > 0

    reasons = []
    for obj in s3.list_objects_v2(Bucket=settings.bucket, Prefix="rejected/batch/").get("Contents", []):
        body = s3.get_object(Bucket=settings.bucket, Key=obj["Key"])["Body"].read().decode()
        reasons += [json.loads(line)["reason"] for line in body.splitlines()]
    joined = " | ".join(reasons)
    assert "row has 19 fields, the header has 20" in joined
    assert joined.count("download_date: is not a date in YYYY-MM-DD form") >= 3
    assert "name: is not valid UTF-8 text" in joined
    assert "app: a quote opened in this field is not closed on its line (an unterminated quote)" in joined
    assert "name: is longer than" in joined and "app: the row is 1,048,576 characters long or more" in joined
    assert "name: contains a NUL character" in joined
    assert all(reason for reason in reasons)

    # Re-dropping the compressed day as CSV (landing_batch) replaces the .gz: one drop, reconciled.
    gz_day = DAYS[CASES.index("gzip drop")]
    batch_world.load(gz_day, gz_day)
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=settings.bucket,
                                                   Prefix=f"landing/batch/download_date={gz_day}/").get("Contents", [])]
    assert listed == [_landing_key(gz_day)]
    engine = batch_world.resources["warehouse"].get_engine()
    (again,) = reconcile_batch(s3=s3, bucket=settings.bucket, engine=engine, days=[gz_day])
    engine.dispose()
    assert again.ok and again.counts["rejected"] == 0, again.describe()
    report("bad batch drops", cases=len(CASES), refused=len(refused),
           rows_quarantined=sum(expected_rejects[d] for d in row_level),
           rows_loaded=sum(r.counts["curated"] for r in results), days_reconciled=len(results))
