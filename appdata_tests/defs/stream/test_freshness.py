"""A stream sink that was never materialized must not look fresh for ever. Dagster 1.13 evaluates a
time-window freshness policy from the last materialization only ("not evaluated" without one),
so the drain sensor records a baseline when it first watches the drain; from there the real
policy of the real assets, evaluated by Dagster's own evaluator, passes, warns after 5 minutes and
fails after 15 without a delivery. Real instance, real definitions; no server (the unit tier)."""

from __future__ import annotations

import asyncio

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.definitions.freshness_evaluator import TimeWindowFreshnessPolicyEvaluator
from dagster._core.loader import LoadingContextForTest
from dagster._core.test_utils import freeze_time  # Dagster's clock, not ours

from appdata.definitions import build_definitions
from appdata.defs.stream.drain import WAREHOUSE_ASSET
from appdata.defs.stream.sensor import FRESHNESS_ASSETS, freshness_baseline


def _state(instance: dg.DagsterInstance, node, at: float) -> FreshnessState:
    """Dagster's evaluation on a loop of its own: asyncio.run() would leave the main thread without
    an event loop, which later tests (Mangum's Lambda adapter) need."""
    loop = asyncio.new_event_loop()
    try:
        with freeze_time(at):
            return loop.run_until_complete(
                TimeWindowFreshnessPolicyEvaluator().evaluate_freshness(LoadingContextForTest(instance), node))
    finally:
        loop.close()


@pytest.mark.usefixtures("offline_env")
def test_a_sink_never_delivered_turns_red_after_the_policys_window():
    graph = build_definitions().resolve_asset_graph()
    with dg.instance_for_test() as instance:
        nodes = {key: graph.get(key) for key in FRESHNESS_ASSETS}
        assert all(node.freshness_policy is not None for node in nodes.values())
        assert _state(instance, nodes[WAREHOUSE_ASSET], 2_000_000_000) == FreshnessState.UNKNOWN  # Dagster alone

        baseline = freshness_baseline(instance)
        assert [m.asset_key for m in baseline] == list(FRESHNESS_ASSETS)
        for materialization in baseline:
            instance.report_runless_asset_event(materialization)
        assert freshness_baseline(instance) == []  # once: the next materialization is the drain's own
        recorded = instance.get_latest_materialization_event(WAREHOUSE_ASSET)
        assert recorded.asset_materialization.metadata["baseline"].value is True
        at = recorded.timestamp

        for key, node in nodes.items():
            fail = node.freshness_policy.fail_window.to_timedelta().total_seconds()
            warn = node.freshness_policy.warn_window.to_timedelta().total_seconds()
            assert _state(instance, node, at + 60) == FreshnessState.PASS, key
            assert _state(instance, node, at + warn + 1) == FreshnessState.WARN, key
            assert _state(instance, node, at + fail + 1) == FreshnessState.FAIL, key
