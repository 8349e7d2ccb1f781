"""Erasure at its edges: a user id spelt any way the contract reads it, a landing file with a
byte order mark, a user filed twice, a user whose rows are only in a landing file not yet loaded."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json

import pandas as pd

from appdata.contract import layout, schema
from appdata.privacy import log, requests
from appdata.privacy.erase import rows_without
from appdata_tests.support.events import make_event

USER = 100_002
# Every way a client may spell USER that the contract reads as USER, and near misses it does not.
SPELLINGS = ["100002", " 100002 ", "100002.0", "1.00002e5", "1.00002E+05", "+100002", "0100002", "100002."]
OTHERS = ["1000020", "100002.5", "100_003", "", "x100002"]


def landing_csv(values: list[str], *, bom: bool = False) -> bytes:
    """A client drop with user_id first, one row per value."""
    columns = ["user_id"] + [c for c in schema.EVENT_COLUMNS if c != "user_id"]
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for n, value in enumerate(values):
        writer.writerow([value] + [str(make_event(n, with_id=True).get(c) or "") for c in columns[1:]])
    return ("\ufeff" if bom else "").encode() + out.getvalue().encode()


def test_every_spelling_the_contract_reads_as_the_user_is_their_row():
    frame = pd.DataFrame([{**make_event(n, with_id=True), "user_id": v} for n, v in enumerate(SPELLINGS)])
    assert schema.validate_records(frame).valid["user_id"].tolist() == [USER] * len(SPELLINGS)

    for body in (landing_csv(SPELLINGS + OTHERS), gzip.compress(landing_csv(SPELLINGS + OTHERS))):
        out, removed = rows_without("landing/batch/download_date=2024-01-01/downloads.csv.gz", body, {USER})
        assert removed == len(SPELLINGS)
        kept = gzip.decompress(out) if out[:2] == b"\x1f\x8b" else out
        assert [row[0] for row in csv.reader(io.StringIO(kept.decode()))][1:] == OTHERS

    letters = b"".join(json.dumps({"reason": "age", "record": {**make_event(n), "user_id": v}}).encode() + b"\n"
                       for n, v in enumerate(SPELLINGS + OTHERS))
    assert rows_without("rejected/api/x.jsonl", letters, {USER})[1] == len(SPELLINGS)


def test_a_landing_file_with_a_byte_order_mark_is_scrubbed_as_the_etl_reads_it():
    body = landing_csv(["100002", "100003"], bom=True)
    out, removed = rows_without("landing/batch/download_date=2024-01-01/downloads.csv", body, {USER})
    assert removed == 1 and out.startswith(b"\xef\xbb\xbfuser_id,") and b"\n100003," in out


def places_of(provisioned, engine) -> requests.Places:
    from appdata.defs.privacy import erasure_places

    return erasure_places(provisioned["s3"], provisioned["dynamodb"], provisioned["lake_table"], engine)


def test_a_user_filed_twice_before_the_job_ran_has_both_requests_carried_out(provisioned):
    import dagster as dg

    from appdata.defs.privacy import erasure_requests

    s3, bucket = provisioned["s3"].get_client(), provisioned["s3"].bucket
    first = log.file_request(s3, bucket, USER, "admin-key:1")
    second = log.file_request(s3, bucket, USER, "admin-key:1")  # a POST retried after a timeout
    result = dg.materialize([erasure_requests], resources=provisioned, raise_on_error=False)
    assert result.success
    assert [log.load(s3, bucket, r.request_id).status for r in (first, second)] == ["done", "done"]


def test_rows_only_in_a_landing_file_not_loaded_yet_are_erased(provisioned):
    s3, bucket = provisioned["s3"].get_client(), provisioned["s3"].bucket
    day = dt.date.today() - dt.timedelta(days=3)
    s3.put_object(Bucket=bucket, Key=layout.landing_key(day), Body=landing_csv(["100002", "100003"]))
    request = log.file_request(s3, bucket, USER, "test")
    with provisioned["warehouse"].connect() as engine:
        outcome = requests.carry_out(request.request_id, places_of(provisioned, engine))
    assert outcome.status == "done" and outcome.traces == {}, outcome
    assert outcome.removed["s3 landing/batch"] == 1
