"""appdata.aws: partial-failure retries (botocore Stubber: moto never fails part of a call), and
listing and existence against the emulator server."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.stub import Stubber

from appdata import aws
from appdata.config import Settings, aws_client_kwargs

OK = {"SequenceNumber": "1", "ShardId": "shardId-000000000000"}
THROTTLED = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}


def offline(service: str):
    """A client that never reaches the network: every answer below comes from the Stubber."""
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def entries(records: list[dict]) -> list[dict]:
    return [{"Data": json.dumps(r, separators=(",", ":")).encode(), "PartitionKey": str(r["user_id"])} for r in records]


# ------------------------------------------------------------------------------ unit tier (Stubber)


def test_put_records_sends_again_only_the_failed_entries_with_bounded_backoff():
    kinesis = offline("kinesis")
    records = [{"event_id": f"e{i}", "user_id": 10 + i} for i in range(3)]
    waits: list[float] = []
    with Stubber(kinesis) as stub:
        stub.add_response("put_records", {"FailedRecordCount": 1, "Records": [OK, THROTTLED, OK]},
                          expected_params={"StreamName": "s", "Records": entries(records)})
        stub.add_response("put_records", {"FailedRecordCount": 1, "Records": [THROTTLED]},
                          expected_params={"StreamName": "s", "Records": entries(records[1:2])})
        stub.add_response("put_records", {"Records": [OK]},
                          expected_params={"StreamName": "s", "Records": entries(records[1:2])})
        outcome = aws.put_records(kinesis, "s", records, partition_key="user_id",
                                  backoff=aws.Backoff(base=0.1, sleep=waits.append))
        stub.assert_no_pending_responses()
    assert outcome.succeeded == [0, 1, 2] and outcome.failed == []
    assert waits == [0.1, 0.2]


def test_put_records_reports_what_still_fails_after_the_attempts():
    kinesis = offline("kinesis")
    records = [{"event_id": "a", "user_id": 1}, {"event_id": "b", "user_id": 2}]
    waits: list[float] = []
    with Stubber(kinesis) as stub:
        stub.add_response("put_records", {"FailedRecordCount": 1, "Records": [THROTTLED, OK]})
        for _ in range(2):
            stub.add_response("put_records", {"FailedRecordCount": 1, "Records": [THROTTLED]})
        outcome = aws.put_records(kinesis, "s", records, partition_key="user_id",
                                  backoff=aws.Backoff(base=1.0, cap=1.5, attempts=3, sleep=waits.append))
        stub.assert_no_pending_responses()
    assert outcome.succeeded == [1] and outcome.failed == [(0, "ProvisionedThroughputExceededException")]
    assert waits == [1.0, 1.5]  # capped


def test_put_records_raises_an_error_of_the_whole_call():
    """Whole-call errors are botocore's to retry (inside the client), never retried again here."""
    kinesis = offline("kinesis")
    with Stubber(kinesis) as stub:
        stub.add_client_error("put_records", "ResourceNotFoundException", "no such stream")
        with pytest.raises(Exception, match="ResourceNotFoundException"):
            aws.put_records(kinesis, "s", [{"user_id": 1}], partition_key="user_id",
                            backoff=aws.Backoff(sleep=lambda s: pytest.fail("must not wait")))


def test_batch_write_items_serializes_and_retries_unprocessed_items():
    dynamodb = offline("dynamodb")
    items = [{"user_id": str(u), "sk": "REC", "score": 0.25, "apps": [{"app": "A", "n": 3}], "gone": None}
             for u in range(30)]
    typed = [{"PutRequest": {"Item": aws.to_item(item)}} for item in items]
    assert typed[0]["PutRequest"]["Item"] == {
        "user_id": {"S": "0"}, "sk": {"S": "REC"}, "score": {"N": "0.25"},
        "apps": {"L": [{"M": {"app": {"S": "A"}, "n": {"N": "3"}}}]}}  # None left out, not NULL
    waits: list[float] = []
    with Stubber(dynamodb) as stub:
        stub.add_response("batch_write_item", {"UnprocessedItems": {"t": typed[20:25]}},
                          expected_params={"RequestItems": {"t": typed[:25]}})
        stub.add_response("batch_write_item", {"UnprocessedItems": {}},
                          expected_params={"RequestItems": {"t": typed[20:25]}})
        stub.add_response("batch_write_item", {}, expected_params={"RequestItems": {"t": typed[25:]}})
        # One call at a time: the stubbed answers are a sequence, and calls in flight together reach
        # it in any order (the retry of the first batch raced the second: 1 failure in 3 runs).
        written = aws.batch_write_items(dynamodb, "t", items, backoff=aws.Backoff(base=0.1, sleep=waits.append),
                                        concurrency=1)
        stub.assert_no_pending_responses()
    assert written == 30 and waits == [0.1]


def test_batch_write_items_gives_up_when_dynamodb_keeps_throttling():
    dynamodb = offline("dynamodb")
    item = {"user_id": "1", "sk": "REC"}
    left = {"UnprocessedItems": {"t": [{"PutRequest": {"Item": aws.to_item(item)}}]}}
    with Stubber(dynamodb) as stub:
        for _ in range(3):
            stub.add_response("batch_write_item", left)
        with pytest.raises(RuntimeError, match="1 items unprocessed"):
            aws.batch_write_items(dynamodb, "t", [item], backoff=aws.Backoff(attempts=3, sleep=lambda s: None))
        stub.assert_no_pending_responses()


def test_items_round_trip_to_plain_values():
    values = {"user_id": "7", "age": 30, "rating": 4.1, "apps": [{"score": 0.5}], "tags": {"b", "a"}}
    plain = aws.from_item(aws.to_item(values))
    assert plain == {**values, "tags": ["a", "b"]}
    assert type(plain["age"]) is int and type(plain["rating"]) is float
    assert aws.from_item({"n": {"N": "12.50"}, "m": {"N": "3.0"}}) == {"n": 12.5, "m": 3}


@pytest.mark.parametrize("value", [1e-200, 1e200, object()])
def test_a_value_dynamodb_cannot_store_is_refused_naming_its_attribute(value):
    with pytest.raises(aws.ItemError, match="^size_mb: DynamoDB cannot store"):
        aws.to_item({"user_id": "1", "size_mb": value})


def test_clients_use_botocore_standard_retries():
    client = aws.client("s3", region_name="us-east-1", max_attempts=3)
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 4}  # 3 retries after the first


# ------------------------------------------------------------------------------ emulator tier


@pytest.fixture()
def s3_bucket(appdata_env: Settings):
    s3 = aws.client("s3", **aws_client_kwargs(appdata_env, "s3"))
    s3.create_bucket(Bucket=appdata_env.bucket)
    return s3, appdata_env.bucket


def test_listing_follows_pages_past_1000_keys(s3_bucket):
    s3, bucket = s3_bucket
    keys = [f"many/download_date=2024-01-{1 + n % 3:02d}/{n:05d}.json" for n in range(1_050)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), keys))
    s3.put_object(Bucket=bucket, Key="other/one.json", Body=b"x")

    listed = list(aws.list_keys(s3, bucket, "many/"))
    assert listed == sorted(keys)  # every page, in key order, nothing outside the prefix
    assert [o["Key"] for o in aws.list_objects(s3, bucket, "many/")] == listed
    assert all(o["Size"] == 1 for o in aws.list_objects(s3, bucket, "many/"))
    after = "many/download_date=2024-01-02/"
    assert list(aws.list_keys(s3, bucket, "many/", start_after=after)) == [k for k in sorted(keys) if k > after]
    assert list(aws.list_prefixes(s3, bucket, "many/")) == [f"many/download_date=2024-01-0{d}/" for d in (1, 2, 3)]
    assert list(aws.list_keys(s3, bucket, "none/")) == []


def test_missing_objects_are_told_apart_from_other_errors(s3_bucket):
    s3, bucket = s3_bucket
    s3.put_object(Bucket=bucket, Key="here.txt", Body=b"x")
    assert aws.object_exists(s3, bucket, "here.txt")
    assert not aws.object_exists(s3, bucket, "absent.txt")
    with pytest.raises(s3.exceptions.ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="absent.txt")
    assert aws.is_missing(missing.value) and aws.error_code(missing.value) == "NoSuchKey"
    with pytest.raises(s3.exceptions.ClientError) as no_bucket:
        s3.get_object(Bucket=f"{bucket}-absent", Key="here.txt")
    assert not aws.is_missing(no_bucket.value) and aws.error_code(no_bucket.value) == "NoSuchBucket"
    assert aws.error_code(ValueError("not AWS")) == "" and not aws.is_missing(ValueError("x"))


def test_get_object_if_changed_skips_the_download_while_the_etag_holds(s3_bucket):
    s3, bucket = s3_bucket
    etag = s3.put_object(Bucket=bucket, Key="model.npz", Body=b"first")["ETag"]
    assert aws.get_object_if_changed(s3, bucket, "model.npz", etag) is None  # 304: nothing sent
    assert aws.get_object_if_changed(s3, bucket, "model.npz", None)["Body"].read() == b"first"
    s3.put_object(Bucket=bucket, Key="model.npz", Body=b"second")
    changed = aws.get_object_if_changed(s3, bucket, "model.npz", etag)
    assert changed["Body"].read() == b"second" and changed["ETag"] != etag
    with pytest.raises(s3.exceptions.ClientError) as missing:
        aws.get_object_if_changed(s3, bucket, "absent.npz", etag)
    assert aws.is_missing(missing.value)
