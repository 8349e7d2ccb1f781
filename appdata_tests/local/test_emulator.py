"""The emulator is a real single-threaded server on loopback: concurrent writes are all kept."""

import concurrent.futures as cf


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
