"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis), on the real emulator.

Valid and schema-violating requests to every operation: never a 5xx, and every 4xx (and every
per-record rejection) names the field at fault. The normal suite tries a few dozen cases per
operation; the full run (issue: >= 10,000 cases) is

    APPDATA_FUZZ_EXAMPLES=2500 pytest -q -m reliability appdata_tests/test_api_fuzz.py -s

(4 operations take input, so 2,500 each is 10,000 cases; the count tried is printed.)
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from appdata.api.app import create_app
from appdata.config import Settings
from appdata.local.provision import ensure_bucket, ensure_stream, ensure_table
from appdata.defs.resources import build_resources

FULL_RUN = bool(os.environ.get("APPDATA_FUZZ_EXAMPLES"))
EXAMPLES = int(os.environ.get("APPDATA_FUZZ_EXAMPLES") or "25")
# The coverage phase (boundary values, wrong methods, missing parts: ~600 cases) runs in the
# full run; the normal suite keeps to the examples and random fuzzing phases.
CONFIG = schemathesis.Config.from_dict({"phases": {"coverage": {"enabled": FULL_RUN}}})

pytestmark = pytest.mark.reliability


class ForwardingApp:
    """ASGI app that forwards to the current test's app (its own bucket, stream and table).

    schemathesis needs the schema at collection time, before fixtures exist; the OpenAPI
    document does not depend on the environment, so it is read from an app built on defaults.
    """

    def __init__(self) -> None:
        self.target = None

    async def __call__(self, scope, receive, send):
        if self.target is None:
            self.target = create_app(Settings.from_env(), api_keys=[])
        await self.target(scope, receive, send)


FORWARD = ForwardingApp()
schema = schemathesis.openapi.from_asgi("/openapi.json", FORWARD, config=CONFIG)
FORWARD.target = None
TRIED: Counter = Counter()
STATUSES: Counter = Counter()


@pytest.fixture(scope="module")
def fuzz_key(emulator_endpoints, tmp_path_factory):
    """One provisioned bucket/stream/table for the whole module (not one per operation)."""
    suffix = uuid.uuid4().hex[:8]
    settings = dataclasses.replace(
        Settings.from_env(), home=tmp_path_factory.mktemp("fuzz-home"), aws_endpoints=emulator_endpoints,
        aws_region="us-east-1", bucket=f"appdata-fuzz-{suffix}", stream=f"appdata-fuzz-{suffix}",
        table=f"appdata-fuzz-{suffix}", warehouse_url="duckdb:///:memory:")
    resources = build_resources(settings)
    ensure_bucket(resources["s3"])
    ensure_stream(resources["kinesis"])
    ensure_table(resources["dynamodb"])
    key = f"fuzz-key-{suffix}"
    FORWARD.target = create_app(settings, api_keys=[key], put_attempts=2, put_base_delay=0.001)
    yield key
    FORWARD.target = None
    print(f"\nfuzz: {sum(TRIED.values())} cases tried: " +
          ", ".join(f"{op} {n}" for op, n in sorted(TRIED.items())) + f"; statuses {dict(sorted(STATUSES.items()))}")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_fuzz_no_5xx_and_every_4xx_names_its_field(case, fuzz_key):
    response = case.call(headers={"x-api-key": fuzz_key})
    label = f"{case.method} {case.path}"
    TRIED[label] += 1
    STATUSES[response.status_code] += 1
    assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:500]}"
    if case.path == "/report":
        return  # no input to name: 200 with the report or 404 "no report built yet"
    if 400 <= response.status_code < 500:
        body = response.json()
        assert body.get("field"), f"{label}: {response.status_code} without a field: {body}"
    if response.status_code in (200, 207) and case.method == "POST":
        body = response.json()
        assert set(body) >= {"accepted", "rejected", "event_ids"}
        assert all(r["field"] and r["reason"] for r in body["rejected"]), body
