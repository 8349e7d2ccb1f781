"""The README's "Get the data" snippet, run as written after a week of stream and batch (poison
records, client retries, a re-run day and a consumer that died with rows buffered among them):
it returns exactly the accepted events, each once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appdata.defs.resources import build_resources
from appdata.stream.consumer import ShardConsumer, stream_created
from appdata.stream.drain import list_shards
from appdata.stream.table_writer import StreamTableWriter, sync_stream_table
from appdata_tests.support.events import make_event
from appdata_tests.support.stream import consumer_sinks, drain_all, forgotten_users, lease_table, put

pytestmark = pytest.mark.emulator

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_snippet() -> str:
    section = README.read_text(encoding="utf-8").split("## Get the data", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_snippet_returns_every_accepted_event_of_the_week_once(batch_world):
    batch_world.load("2020-01-01", "2020-01-07")
    batch_world.load("2020-01-03", "2020-01-03")  # a day re-run: replaced, not doubled

    resources = build_resources(batch_world.settings)
    kinesis, stream = resources["kinesis"].get_client(), resources["kinesis"].stream_name
    leases = lease_table(resources)
    (shard,) = list_shards(kinesis, stream)
    week = [make_event(n, day=f"2020-01-0{1 + n % 7}", with_id=True) for n in range(140)]
    with resources["warehouse"].connect() as engine:
        put(kinesis, stream, week[:100] + [b"{broken", {**week[0], "event_id": "x", "age": 300}] + week[:20])
        dying = StreamTableWriter(open_table=resources["lake_table"].open, kinesis=kinesis, stream=stream,
                                  shard_id=shard["ShardId"], delivered=lambda: leases.get(shard["ShardId"]).checkpoint)
        ShardConsumer(kinesis=kinesis, stream=stream, shard_id=shard["ShardId"], parents=[], leases=leases,
                      owner="dies", sinks=consumer_sinks(resources, engine), created=stream_created(kinesis, stream),
                      on_range=dying.add).run(stop_when_caught_up=True)  # never commits: it died
        put(kinesis, stream, week[100:] + week[90:110])
        drain_all(resources, engine)
        sync_stream_table(resources["lake_table"].open, kinesis, stream, leases, forgotten_users(resources))
        with engine.connect() as conn:
            accepted = sorted(
                [("stream", r[0]) for r in conn.exec_driver_sql(
                    "SELECT event_id FROM downloads_stream WHERE download_date BETWEEN '2020-01-01' AND '2020-01-07'")]
                + [("batch", r[0]) for r in conn.exec_driver_sql(
                    "SELECT event_id FROM downloads_batch WHERE download_date BETWEEN '2020-01-01' AND '2020-01-07'")])

    namespace: dict = {}
    exec(readme_snippet(), namespace)  # noqa: S102 - the README's own lines, as a reader runs them
    got = sorted(zip(namespace["df"]["source"], namespace["df"]["event_id"]))
    assert len([a for a in accepted if a[0] == "stream"]) == 140
    assert len([a for a in accepted if a[0] == "batch"]) == 7 * 60
    assert got == accepted
