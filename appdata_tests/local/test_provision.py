"""Provisioning creates bucket, stream, table and warehouse tables, and is idempotent."""

import sqlalchemy as sa

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
