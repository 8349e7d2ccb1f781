"""The ingest API over the real emulator: what a client posting events and reading them sees."""

from __future__ import annotations

import json
import logging
import os

import pytest
from fastapi.testclient import TestClient

from appdata.contract import schema
from appdata.api.app import create_app
from appdata_tests.support.api import download_item
from appdata_tests.support.events import make_event
from appdata_tests.support.stream import read_stream


@pytest.fixture()
def api_key(appdata_env) -> str:
    return os.environ["APPDATA_API_KEYS"]


@pytest.fixture()
def client(provisioned, appdata_env) -> TestClient:
    with TestClient(create_app(appdata_env, put_base_delay=0.01)) as test_client:
        yield test_client


@pytest.fixture()
def bare_client(appdata_env) -> TestClient:
    """The app with nothing provisioned: for requests refused before any AWS call."""
    with TestClient(create_app(appdata_env)) as test_client:
        yield test_client


def _auth(key: str) -> dict[str, str]:
    return {"x-api-key": key}


def _dead_letters(s3_client, bucket: str) -> list[tuple[str, dict]]:
    listing = s3_client.list_objects_v2(Bucket=bucket, Prefix="rejected/api/").get("Contents", [])
    out = []
    for obj in listing:
        text = s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
        out.extend((obj["Key"], json.loads(line)) for line in text.splitlines() if line)
    return out


def test_valid_batch_lands_in_kinesis(client, provisioned, api_key):
    events = [make_event(i) for i in range(20)]
    events[0]["event_id"] = "client-chosen-id"
    response = client.post("/v1/downloads", json={"records": events}, headers=_auth(api_key))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 20 and body["rejected"] == []
    assert body["event_ids"][0] == "client-chosen-id"
    assert body["event_ids"][1] == schema.derive_event_id(events[1])

    kinesis = provisioned["kinesis"]
    stored = read_stream(kinesis.get_client(), kinesis.stream_name)
    assert [r["data"]["event_id"] for r in stored] == body["event_ids"]
    first = stored[0]
    assert first["partition_key"] == str(events[0]["user_id"])
    assert set(first["data"]) == set(schema.EVENT_COLUMNS)
    assert first["data"]["download_date"] == events[0]["download_date"]
    assert first["data"]["size_mb"] is None  # sample 0 has no size: null, not NaN
    assert stored[1]["data"]["age"] == events[1]["age"] and isinstance(stored[1]["data"]["age"], int)
    assert b'": ' not in first["raw"] and b'", "' not in first["raw"]  # compact JSON


def test_single_event_and_plain_list_are_accepted(client, api_key):
    one = client.post("/v1/downloads", json=make_event(1), headers=_auth(api_key))
    many = client.post("/v1/downloads", json=[make_event(2), make_event(3)], headers=_auth(api_key))
    assert one.status_code == 200 and one.json()["accepted"] == 1
    assert many.status_code == 200 and many.json()["accepted"] == 2


def test_invalid_records_rejected_per_record_and_kept(client, provisioned, api_key):
    events = [
        make_event(0),
        make_event(1, age=None),                    # null
        make_event(2, rating=float("nan")),         # NaN
        make_event(3, app="  "),                    # empty required
        make_event(4, reviews="many"),              # bad type
        make_event(5, download_date="7-Jan-18"),    # bad date
        make_event(6, category=["GAME"]),           # a list where a value belongs
        "not an object",
        make_event(8),
    ]
    body = json.dumps({"records": events}).encode()  # json.dumps writes NaN as the client would
    response = client.post("/v1/downloads", content=body,
                           headers={**_auth(api_key), "content-type": "application/json"})

    assert response.status_code == 207, response.text
    result = response.json()
    assert result["accepted"] == 2
    assert result["event_ids"] == [schema.derive_event_id(events[0]), schema.derive_event_id(events[8])]
    rejected = {(r["index"], r["field"]) for r in result["rejected"]}
    assert rejected == {(1, "age"), (2, "rating"), (3, "app"), (4, "reviews"), (5, "download_date"),
                        (6, "category"), (7, "record")}
    assert all(r["reason"] for r in result["rejected"])

    letters = _dead_letters(provisioned["s3"].get_client(), provisioned["s3"].bucket)
    assert sorted(line["row"] for _, line in letters) == [1, 2, 3, 4, 5, 6, 7]
    by_row = {line["row"]: (key, line) for key, line in letters}
    key, line = by_row[1]
    assert key.startswith("rejected/api/download_date=2024-01-02/") and key.endswith(".jsonl")
    assert line["source"] == "api" and line["field"] == "age" and line["record"]["app"] == "App 1"
    assert line["request_id"] == result["request_id"] and line["rejected_at"].endswith("Z")
    assert by_row[2][1]["record"]["rating"] == "NaN"  # the client's literal, as text: the file stays valid JSON

    kinesis = provisioned["kinesis"]
    assert len(read_stream(kinesis.get_client(), kinesis.stream_name)) == 2


def test_retried_post_yields_same_event_ids_and_same_dead_letter(client, provisioned, api_key):
    events = [make_event(i) for i in range(5)] + [make_event(5, age=7)]
    first = client.post("/v1/downloads", json=events, headers=_auth(api_key)).json()
    again = client.post("/v1/downloads", json=events, headers=_auth(api_key)).json()
    assert first["event_ids"] == again["event_ids"] and len(set(first["event_ids"])) == 5
    assert first["request_id"] == again["request_id"]
    letters = _dead_letters(provisioned["s3"].get_client(), provisioned["s3"].bucket)
    assert len(letters) == 1  # the retry rewrote the same dead-letter object
    # numbers sent as strings are the same event: same id
    as_text = {k: (str(v) if isinstance(v, (int, float)) and v is not None else v) for k, v in events[0].items()}
    third = client.post("/v1/downloads", json=as_text, headers=_auth(api_key)).json()
    assert third["event_ids"] == [first["event_ids"][0]]


def test_auth_is_required_on_v1_and_not_on_healthz(bare_client, api_key):
    client = bare_client
    assert client.get("/healthz").json()["status"] == "ok"
    missing = client.post("/v1/downloads", json=make_event())
    wrong = client.post("/v1/downloads", json=make_event(), headers=_auth(api_key + "x"))
    assert (missing.status_code, missing.json()["field"]) == (401, "x-api-key")
    assert (wrong.status_code, wrong.json()["field"]) == (403, "x-api-key")
    for path in ("/v1/users/1/downloads", "/v1/users/1/recommendations"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=_auth("nope")).status_code == 403


def test_second_key_works_and_no_keys_refuses_all(provisioned, appdata_env):
    with TestClient(create_app(appdata_env, api_keys=["first", "second"])) as c:
        assert c.post("/v1/downloads", json=make_event(), headers=_auth("second")).status_code == 200
    with TestClient(create_app(appdata_env, api_keys=[])) as c:
        assert c.post("/v1/downloads", json=make_event(), headers=_auth("anything")).status_code == 403


def test_body_over_limit_refused_before_parsing(provisioned, appdata_env, api_key):
    with TestClient(create_app(appdata_env, max_body_bytes=2048)) as c:
        big = json.dumps([make_event(i) for i in range(20)]).encode()
        declared = c.post("/v1/downloads", content=big, headers=_auth(api_key))
        assert declared.status_code == 413 and declared.json()["field"] == "body"
        assert "2048" in declared.json()["detail"]

        def chunks():  # no Content-Length: the streamed body is counted
            for start in range(0, len(big), 500):
                yield big[start:start + 500]

        streamed = c.post("/v1/downloads", content=chunks(), headers=_auth(api_key))
        assert streamed.status_code == 413
        # not even JSON: refused for its size, not its syntax
        assert c.post("/v1/downloads", content=b"{" * 5000, headers=_auth(api_key)).status_code == 413


def test_too_many_records_names_the_limit(bare_client, api_key):
    client = bare_client
    response = client.post("/v1/downloads", json=[{"user_id": 1}] * 501, headers=_auth(api_key))
    assert response.status_code == 413
    assert response.json()["field"] == "records" and "500" in response.json()["detail"]


MALFORMED = [
    (b"{not json", 400, "body"),
    (b"", 400, "body"),
    (b"\xff\xfe", 400, "body"),
    (b"42", 422, "body"),
    (b'{"records": {"a": 1}}', 422, "records"),
    (b"[]", 422, "records"),
    (b"[" * 100000 + b"]" * 100000, 400, "body"),
    ('[{"user_id": 1}]'.encode("utf-16"), 400, "body"),  # the drain and the batch take UTF-8 only
    (b"\xef\xbb\xbf" + b'[{"user_id": 1}]', 400, "body"),  # a BOM is no JSON
    (b'[{"name": "\xed\xa0\x80"}]', 400, "body"),  # an encoded surrogate is no UTF-8
]


def test_malformed_bodies_are_4xx_naming_the_field(bare_client, api_key):
    for body, status, field in MALFORMED:
        response = bare_client.post("/v1/downloads", content=body, headers=_auth(api_key))
        assert response.status_code == status, (body[:20], response.text)
        assert response.json()["field"] == field and response.json()["detail"]


def test_get_downloads_newest_first(client, provisioned, api_key):
    dynamodb = provisioned["dynamodb"]
    ddb = dynamodb.get_client()
    days = ["2024-03-05", "2024-01-20", "2024-03-10", "2024-02-01"]
    for i, day in enumerate(days):
        record = schema.frame_to_records(schema.validate_records(
            schema.records_to_frame([make_event(i, user_id=77, download_date=day, event_id=f"e{i}")])).valid)[0]
        ddb.put_item(TableName=dynamodb.table_name, Item=download_item(record))
    ddb.put_item(TableName=dynamodb.table_name,
                 Item={"user_id": {"S": "77"}, "sk": {"S": "REC"}, "apps": {"L": []}})  # not a download

    response = client.get("/v1/users/77/downloads", headers=_auth(api_key))
    assert response.status_code == 200
    body = response.json()
    assert [d["download_date"] for d in body["downloads"]] == sorted(days, reverse=True)
    first = body["downloads"][0]
    assert first["user_id"] == 77 and isinstance(first["age"], int) and first["event_id"] == "e2"
    assert body["count"] == 4

    limited = client.get("/v1/users/77/downloads", params={"limit": 2}, headers=_auth(api_key)).json()
    assert [d["download_date"] for d in limited["downloads"]] == ["2024-03-10", "2024-03-05"]

    unknown = client.get("/v1/users/78/downloads", headers=_auth(api_key))
    assert unknown.status_code == 404 and unknown.json()["field"] == "user_id"
    bad_limit = client.get("/v1/users/77/downloads", params={"limit": 0}, headers=_auth(api_key))
    assert bad_limit.status_code == 422 and bad_limit.json()["field"] == "limit"
    bad_user = client.get("/v1/users/abc/downloads", headers=_auth(api_key))
    assert bad_user.status_code == 422 and bad_user.json()["field"] == "user_id"


def test_recommendations_route(client, provisioned, api_key):
    dynamodb = provisioned["dynamodb"]
    assert client.get("/v1/users/5/recommendations", headers=_auth(api_key)).status_code == 404
    dynamodb.get_client().put_item(TableName=dynamodb.table_name, Item={
        "user_id": {"S": "5"}, "sk": {"S": "REC"},
        "apps": {"L": [{"M": {"app": {"S": "Chess"}, "category": {"S": "GAME"}, "score": {"N": "0.75"}}}]},
        "generated_at": {"S": "2024-05-01T10:00:00Z"}, "method": {"S": "item-cooccurrence"},
    })
    body = client.get("/v1/users/5/recommendations", headers=_auth(api_key)).json()
    assert body == {"user_id": 5, "apps": [{"app": "Chess", "category": "GAME", "score": 0.75}],
                    "generated_at": "2024-05-01T10:00:00Z", "method": "item-cooccurrence"}


def test_report_served_from_home_then_s3_else_404(client, provisioned, appdata_env):
    missing = client.get("/report")
    assert missing.status_code == 404 and "no report built yet" in missing.json()["detail"]

    s3 = provisioned["s3"]
    s3.get_client().put_object(Bucket=s3.bucket, Key="reports/appdata_report.html", Body=b"<html>from s3</html>")
    from_s3 = client.get("/report")
    assert from_s3.status_code == 200 and "from s3" in from_s3.text
    assert from_s3.headers["content-type"].startswith("text/html")

    local = appdata_env.home / "reports" / "appdata_report.html"
    local.parent.mkdir(parents=True)
    local.write_text("<html>local report</html>")
    assert "local report" in client.get("/report").text


def test_kinesis_outage_is_503_and_claims_nothing(client, provisioned, api_key):
    kinesis = provisioned["kinesis"]
    kinesis.get_client().delete_stream(StreamName=kinesis.stream_name)
    response = client.post("/v1/downloads", json=[make_event(1)], headers=_auth(api_key))
    assert response.status_code == 503
    assert "Kinesis" in response.json()["detail"] and "accepted" not in response.json()


def test_keys_and_names_never_logged(client, api_key, caplog):
    caplog.set_level(logging.DEBUG)
    client.post("/v1/downloads", json=[make_event(1, name="Zebulon Secretname"), make_event(2, age=3)],
                headers=_auth(api_key))
    client.post("/v1/downloads", json=make_event(3), headers=_auth("wrong-key-value"))
    text = caplog.text
    assert "Zebulon" not in text and api_key not in text and "wrong-key-value" not in text
    assert "accepted" in text  # the ingest summary is logged, without the records


def test_openapi_documents_every_event_field(client):
    spec = client.get("/openapi.json").json()
    event = spec["components"]["schemas"]["DownloadEvent"]
    assert set(event["properties"]) == set(schema.EVENT_COLUMNS)
    assert all(event["properties"][f.name].get("description") for f in schema.FIELDS)
    assert set(event["required"]) == {f.name for f in schema.FIELDS if f.required and f.name != "event_id"}
    assert "x-api-key" in json.dumps(spec["components"]["securitySchemes"])


def test_a_second_record_of_one_event_id_with_other_content_is_rejected_as_a_conflict(client, provisioned, api_key):
    first = make_event(0, event_id="evt-1")
    events = [first, {**first, "app": "Other"}, dict(first), {**first, "event_id": " evt-1 ", "age": 70}, make_event(1)]
    response = client.post("/v1/downloads", json=events, headers=_auth(api_key))
    assert response.status_code == 207, response.text
    result = response.json()
    assert result["accepted"] == 3  # the first, its identical repeat, and the other event
    assert [(r["index"], r["field"], r["reason"]) for r in result["rejected"]] == [
        (1, "event_id", schema.CONFLICT), (3, "event_id", schema.CONFLICT)]


def test_an_event_with_a_field_named_records_is_one_event(client, provisioned, api_key):
    event = {**make_event(3), "records": "not the envelope"}
    response = client.post("/v1/downloads", json=event, headers=_auth(api_key))
    assert response.status_code == 200 and response.json()["accepted"] == 1, response.text
