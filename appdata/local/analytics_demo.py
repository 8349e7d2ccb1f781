"""`run_analytics_demo`: materialize the analytics group on the current warehouse, return headlines.

`appdata demo` calls it after loading data; it returns numbers a person can check (rows per
mart, hit rates, where the report is) rather than printing them, so the caller decides how.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from appdata.config import Settings
from appdata.local.instance import local_instance


def run_analytics_demo(settings: Settings | None = None, instance: dg.DagsterInstance | None = None) -> dict[str, Any]:
    from appdata.defs.analytics import analytics_report, mart_assets, user_recommendations
    from appdata.analytics.report import report_path
    from appdata.defs.resources import build_resources

    settings = settings or Settings.from_env()
    resources = build_resources(settings)
    result = dg.materialize([*mart_assets, user_recommendations, analytics_report], resources=resources, instance=instance or local_instance(settings),
                            tags={"appdata/demo": "analytics"})
    if not result.success:
        raise RuntimeError("analytics materialization failed; see the run's logs")
    headline: dict[str, Any] = {"run_id": result.run_id}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        name = materialization.asset_key.to_user_string()
        values = {k: v.value for k, v in materialization.metadata.items()}
        if name.startswith("mart_"):
            headline[f"rows_{name}"] = values.get("dagster/row_count")
        elif name == "user_recommendations":
            headline["recommendation_users"] = values.get("users")
            headline["hit_rate_at_10"] = values.get("hit_rate_at_10")
            headline["baseline_hit_rate_at_10"] = values.get("baseline_most_popular_hit_rate_at_10")
            headline["eval_users"] = values.get("eval_users")
        elif name == "analytics_report":
            headline["downloads"] = values.get("downloads")
            headline["report_s3_uri"] = values.get("s3_uri")
    checks = result.get_asset_check_evaluations()
    headline["beats_baseline"] = bool(checks) and all(c.passed for c in checks)
    headline["report_path"] = str(report_path(settings.home))
    return headline
