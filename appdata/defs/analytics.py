"""Analytics assets (group `analytics`): the marts, user recommendations and the HTML report.

Every asset here opens the warehouse, and the embedded DuckDB file admits one process at a
time, so all of them run in pool "warehouse".

When they refresh (declarative automation, sensor `analytics_automation`, on by default):
- a batch load (`downloads_batch`, any partition) rebuilds the marts on the sensor's next tick,
  once no batch load is still in progress (a multi-day backfill triggers one rebuild, not one per day);
- the stream (`downloads_stream`) is drained every few seconds, so following it eagerly would
  rebuild the marts constantly: its updates rebuild the marts at most every 15 minutes
  (`STREAM_REFRESH_CRON`), and only if a drain wrote something since the last rebuild;
- recommendations follow `mart_charts` (a full refit, saved for the drain's incremental refreshes),
  the report follows the marts.
No clock is involved (a 23:45 schedule used to assume the 23:00 batch was done). Plain `eager()`
does not fit: it waits while any upstream partition is missing, and a daily-partitioned input
since 2020 always has some.
"""

from collections.abc import Sequence

import dagster as dg
import pandas as pd

from appdata.analytics import plots
from appdata.analytics.marts import MARTS, build_mart, read_mart
from appdata.analytics.recommend import evaluate, refresh_all_recommendations
from appdata.analytics.report import build_report, write_report
from appdata.contract.layout import RECOMMENDER_MODEL_KEY
from appdata.defs.metadata import preview
from appdata.defs.resources import DynamoDBResource, LakeS3Resource, LocalReportResource, WarehouseResource

GROUP = "analytics"
POOL = "warehouse"
DOWNLOADS = [dg.AssetKey("downloads_batch"), dg.AssetKey("downloads_stream")]
STREAM_REFRESH_CRON = "*/15 * * * *"


def follows(prompt: Sequence[str], throttled: Sequence[str] = (),
            cron: str = STREAM_REFRESH_CRON) -> dg.AutomationCondition:
    """Request when a `prompt` dependency updated since this asset was last requested or updated
    (once none of them is still in progress), or, for `throttled` dependencies, on the first
    tick after each `cron` tick if they updated since then."""
    handled = dg.AutomationCondition.newly_requested() | dg.AutomationCondition.newly_updated()
    prompt_keys = dg.AssetSelection.assets(*prompt)
    due = dg.AutomationCondition.any_deps_updated().allow(prompt_keys).since(handled)
    if throttled:
        # Reset on newly_updated alone (in_progress covers the requested-not-yet-done gap): Dagster keys a
        # since() cursor by its children's kinds, ignoring allow(), so a second since(handled) over
        # any_deps_updated would share the first one's state.
        changed = (dg.AutomationCondition.any_deps_updated().allow(dg.AssetSelection.assets(*throttled))
                   .since(dg.AutomationCondition.newly_updated()))
        due = due | (dg.AutomationCondition.cron_tick_passed(cron) & changed)
    waiting = dg.AutomationCondition.any_deps_in_progress().allow(prompt_keys) | dg.AutomationCondition.in_progress()
    return (due & ~waiting).with_label(f"follows {', '.join(prompt)}" + (f"; {', '.join(throttled)} every "
                                                                          f"'{cron}'" if throttled else ""))

_DESCRIPTIONS = {
    "mart_downloads_daily": "Downloads and distinct users per day and category, batch and stream together.",
    "mart_audience": "Downloads and distinct users by age band x location (US state) x category.",
    "mart_time_spent": "Total and average minutes spent per download, by category and age band.",
    "mart_charts": "Top 10 apps per category over the 30 days up to the latest download date, "
    "ties broken by rating then installs, like the store's top charts.",
    "mart_download_facts": "Downloads and minutes per user, app, day, age band and state: what the dashboard "
    "filters and counts distinct users on (it publishes no group under 5 users).",
}
_FIGURE_OF = {mart: (key, caption, draw) for key, (caption, mart, draw) in plots.FIGURES.items()}


def _preview(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    """Without user ids: Dagster's event log keeps metadata for good, where no erasure reaches."""
    return preview(frame.drop(columns=[c for c in ("user_id",) if c in frame.columns]), rows, empty="(empty)")


def _mart_asset(name: str) -> dg.AssetsDefinition:
    @dg.asset(name=name, group_name=GROUP, pool=POOL, deps=DOWNLOADS, kinds={"sql", "duckdb", "postgres"},
              automation_condition=follows(["downloads_batch"], throttled=["downloads_stream"]),
              description=_DESCRIPTIONS[name] + " Rebuilt atomically (DELETE + INSERT in one transaction).")
    def _mart(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        with warehouse.connect() as engine:
            built = build_mart(engine, name)
            frame = read_mart(engine, name)
        context.log.info(f"{name}: {built.rows:,} rows")
        metadata = {"dagster/row_count": built.rows, "preview": _preview(frame), "dialect": warehouse.dialect}
        if name in _FIGURE_OF:
            key, caption, draw = _FIGURE_OF[name]
            metadata["plot"] = dg.MetadataValue.md(plots.markdown_image(draw(frame), caption))
        if built.window:
            metadata["window"] = f"{built.window[0]}..{built.window[1]}"
        return dg.MaterializeResult(metadata=metadata)

    return _mart


mart_assets = [_mart_asset(name) for name in MARTS]


@dg.asset(
    group_name=GROUP, pool=POOL, deps=[dg.AssetKey("mart_charts"), *DOWNLOADS], kinds={"dynamodb", "s3", "python"},
    automation_condition=follows(["mart_charts"]),
    check_specs=[dg.AssetCheckSpec("beats_most_popular_baseline", asset="user_recommendations",
                                   description="Hit rate at 10 (latest download held out) above the most-popular baseline's.")],
    description="For every user, 10 apps they have not downloaded: item-item co-occurrence blended with the "
    "user's categories, charts for users with little history; written to DynamoDB (sk=REC). Refits the "
    "model on the whole warehouse and saves it to s3://<bucket>/" + RECOMMENDER_MODEL_KEY + ", from which "
    "the stream drain refreshes the users it touches. Evaluated offline on every run (latest download held "
    "out, hit rate at 10 vs. most popular).",
)
def user_recommendations(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                         dynamodb: DynamoDBResource, s3: LakeS3Resource) -> dg.MaterializeResult:
    with warehouse.connect() as engine:
        refresh = refresh_all_recommendations(engine, s3.get_client(), s3.bucket, dynamodb.get_client(),
                                              dynamodb.table_name)
    recs, model = refresh.recommendations, refresh.model
    evaluation = evaluate(refresh.recommender.user_apps)
    methods = pd.Series([r.method for r in recs], dtype=object).value_counts().to_dict()
    context.log.info(f"wrote {refresh.items_written:,} recommendation items; model saved to {refresh.model_uri}; "
                     f"hit@10 {evaluation.hit_rate:.4f} vs most popular {evaluation.baseline_hit_rate:.4f} "
                     f"over {evaluation.users:,} users")
    sample = pd.DataFrame([{"user_id": r.user_id, "method": r.method, "apps": ", ".join(a["app"] for a in r.apps[:5])}
                           for r in recs[:5]])
    beats = evaluation.users > 0 and evaluation.hit_rate > evaluation.baseline_hit_rate
    return dg.MaterializeResult(
        metadata={"dagster/row_count": refresh.items_written, "users": len(recs),
                  **{f"users_{k}": int(v) for k, v in methods.items()}, **evaluation.as_metadata(),
                  "model_fitted_at": dg.MetadataValue.timestamp(model.fitted_at),
                  "model_uri": dg.MetadataValue.url(refresh.model_uri), "model_apps": len(model.app_names),
                  "model_similarity_pairs": int(model.similarity.nnz), "sample": _preview(sample)},
        check_results=[dg.AssetCheckResult(
            check_name="beats_most_popular_baseline", passed=bool(beats), severity=dg.AssetCheckSeverity.WARN,
            metadata={"hit_rate_at_10": evaluation.hit_rate, "baseline_hit_rate_at_10": evaluation.baseline_hit_rate,
                      "eval_users": evaluation.users})],
    )


@dg.asset(
    group_name=GROUP, pool=POOL, deps=[dg.AssetKey(name) for name in MARTS], kinds={"html", "s3"},
    automation_condition=follows(list(MARTS)),
    description="One self-contained HTML report of every figure (images inline), at "
    "$APPDATA_HOME/reports/appdata_report.html and s3://<bucket>/reports/; the API serves it at GET /report "
    "(the interactive dashboard is GET /dashboard).",
)
def analytics_report(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                     s3: LakeS3Resource, local_report: LocalReportResource) -> dg.MaterializeResult:
    with warehouse.connect() as engine:
        report = build_report(engine)
    where = write_report(report, local_report.home_path, s3.get_client(), s3.bucket)
    context.log.info(f"report written to {where}")
    metadata = {"path": dg.MetadataValue.path(where["path"]), "bytes": len(report.html.encode("utf-8")),
                **{k: v for k, v in report.headline.items()}}
    if "s3_uri" in where:
        metadata["s3_uri"] = dg.MetadataValue.url(where["s3_uri"])
    for key, png in report.images.items():
        metadata[f"figure_{key}"] = dg.MetadataValue.md(plots.markdown_image(png, plots.FIGURES[key][0]))
    return dg.MaterializeResult(metadata=metadata)


analytics_job = dg.define_asset_job(
    "analytics_job", selection=dg.AssetSelection.groups(GROUP),
    description="Rebuild the marts, every user's recommendations and the HTML report (by hand, from the UI).",
)
analytics_automation = dg.AutomationConditionSensorDefinition(
    "analytics_automation", target=dg.AssetSelection.groups(GROUP), default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Rebuilds the marts after batch loads (and at most every 15 minutes after drains), then "
    "recommendations and the report; on by default, so freshness waits for no clock.",
)
