"""The emulator is a real server on loopback; provisioning is idempotent against it."""

import concurrent.futures as cf

import sqlalchemy as sa

from appdata.config import is_loopback_endpoint
from appdata.local.provision import provision
from appdata.defs.resources import build_resources


def test_provision_creates_everything_and_is_idempotent(appdata_env):
    resources = build_resources(appdata_env)
    first = provision(resources)
    assert "created" in first[f"s3://{appdata_env.bucket}"]
    assert first[f"kinesis:{appdata_env.stream}"] == "created"
    second = provision(resources)
    assert second[f"s3://{appdata_env.bucket}"] == "exists"
    assert second[f"kinesis:{appdata_env.stream}"] == "exists"
    assert second[f"dynamodb:{appdata_env.table}"] == "exists"
    engine = resources["warehouse"].get_engine()
    assert {"downloads_batch", "downloads_stream"} <= set(sa.inspect(engine).get_table_names())


def test_emulator_keeps_every_concurrent_kinesis_write(provisioned, appdata_env):
    """8 producers x 250 records at once: the single-threaded server stores all of them."""
    client = provisioned["kinesis"].get_client()

    def produce(producer: int) -> int:
        own = provisioned["kinesis"].get_client()
        for batch in range(5):
            records = [{"Data": f"{producer}-{batch}-{i}".encode(), "PartitionKey": str(i)} for i in range(50)]
            assert own.put_records(StreamName=appdata_env.stream, Records=records)["FailedRecordCount"] == 0
        return 250

    with cf.ThreadPoolExecutor(8) as pool:
        sent = sum(pool.map(produce, range(8)))
    shard = client.list_shards(StreamName=appdata_env.stream)["Shards"][0]["ShardId"]
    iterator = client.get_shard_iterator(StreamName=appdata_env.stream, ShardId=shard,
                                         ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    seen, sequences = [], set()
    while True:
        page = client.get_records(ShardIterator=iterator, Limit=10000)
        seen.extend(r["Data"] for r in page["Records"])
        sequences.update(r["SequenceNumber"] for r in page["Records"])
        if not page["Records"]:
            break
        iterator = page["NextShardIterator"]
    assert sent == 2000
    assert len(seen) == 2000 and len(set(seen)) == 2000
    assert len(sequences) == 2000


def test_resources_point_at_loopback_only(appdata_env):
    assert is_loopback_endpoint(appdata_env.aws_endpoint_url)
    assert not is_loopback_endpoint("https://s3.us-east-1.amazonaws.com")
    client = build_resources(appdata_env)["s3"].get_client()
    assert client.meta.endpoint_url == appdata_env.aws_endpoint_url
    assert client.meta.service_model.service_name == "s3"
