"""The same API on AWS Lambda: API Gateway REST (v1) proxy events through the Mangum handler."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from appdata.contract import schema
from appdata.api.app import app as lazy_app
from appdata.api.lambda_handler import handler
from appdata_tests.support.api import download_item, proxy_event
from appdata_tests.support.events import make_event
from appdata_tests.support.stream import read_stream

CONTEXT = SimpleNamespace(function_name="appdata-api", aws_request_id="req-1", memory_limit_in_mb=512)


@pytest.fixture()
def invoke(provisioned, appdata_env, lambda_event_loop):
    """Call the handler as Lambda would, with the app built from this test's environment."""
    lazy_app.reset()

    def call(*args, **kwargs):
        return handler(proxy_event(*args, **kwargs), CONTEXT)

    yield call
    lazy_app.reset()


def test_lambda_every_route(invoke, provisioned, appdata_env):
    key = {"x-api-key": os.environ["APPDATA_API_KEYS"]}

    health = invoke("GET", "/healthz")
    assert health["statusCode"] == 200 and json.loads(health["body"])["status"] == "ok"

    events = [make_event(i, user_id=9) for i in range(3)] + [make_event(3, age=5)]
    posted = invoke("POST", "/v1/downloads", headers={**key, "Content-Type": "application/json"},
                    body=json.dumps({"records": events}))
    assert posted["statusCode"] == 207, posted["body"]
    result = json.loads(posted["body"])
    assert result["accepted"] == 3 and result["rejected"][0]["index"] == 3
    kinesis = provisioned["kinesis"]
    assert [r["data"]["event_id"] for r in read_stream(kinesis.get_client(), kinesis.stream_name)] == result["event_ids"]

    # API Gateway base64-encodes binary bodies; the retry gives the same ids
    again = invoke("POST", "/v1/downloads", headers=key, body=json.dumps(events).encode(), base64_body=True)
    assert json.loads(again["body"])["event_ids"] == result["event_ids"]

    assert invoke("GET", "/v1/users/9/downloads", headers=key)["statusCode"] == 404
    dynamodb = provisioned["dynamodb"]
    typed = schema.frame_to_records(schema.validate_records(schema.records_to_frame(
        [{**e, "event_id": i} for e, i in zip(events, result["event_ids"])][:3])).valid)
    for record in typed:
        dynamodb.get_client().put_item(TableName=dynamodb.table_name, Item=download_item(record))
    downloads = invoke("GET", "/v1/users/9/downloads", headers=key, query={"limit": "2"})
    assert downloads["statusCode"] == 200
    dates = [d["download_date"] for d in json.loads(downloads["body"])["downloads"]]
    assert dates == sorted((r["download_date"] for r in typed), reverse=True)[:2]

    assert invoke("GET", "/v1/users/9/recommendations", headers=key)["statusCode"] == 404
    dynamodb.get_client().put_item(TableName=dynamodb.table_name, Item={
        "user_id": {"S": "9"}, "sk": {"S": "REC"}, "apps": {"L": [{"M": {"app": {"S": "Chess"}}}]}})
    recs = invoke("GET", "/v1/users/9/recommendations", headers=key)
    assert recs["statusCode"] == 200 and json.loads(recs["body"])["apps"] == [{"app": "Chess"}]

    assert invoke("GET", "/report")["statusCode"] == 404
    s3 = provisioned["s3"]
    s3.get_client().put_object(Bucket=s3.bucket, Key="reports/appdata_report.html", Body=b"<html>r</html>")
    page = invoke("GET", "/report")
    assert page["statusCode"] == 200 and "<html>r</html>" in page["body"]

    assert invoke("GET", "/openapi.json")["statusCode"] == 200


def test_lambda_auth_and_bad_input(invoke):
    assert invoke("POST", "/v1/downloads", body="{}")["statusCode"] == 401
    wrong = invoke("GET", "/v1/users/1/downloads", headers={"x-api-key": "wrong"})
    assert wrong["statusCode"] == 403 and json.loads(wrong["body"])["field"] == "x-api-key"
    key = {"x-api-key": os.environ["APPDATA_API_KEYS"]}
    bad = invoke("POST", "/v1/downloads", headers=key, body="{oops")
    assert bad["statusCode"] == 400 and json.loads(bad["body"])["field"] == "body"
    huge = invoke("POST", "/v1/downloads", headers=key, body=json.dumps([make_event(1)] * 600))
    assert huge["statusCode"] == 413
