"""The batch job and its 23:00 schedule (the seed's time for the client's daily drop)."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from appdata.config import Settings
from appdata.defs.partitions import daily_partitions

JOB_NAME = "batch_daily"
SCHEDULE_NAME = "batch_daily_at_23"

# The day's client data (and what it is built from), the drop, the ETL and the warehouse load.
# Including the catalogue and users (unpartitioned, deterministic, a second or two) makes the
# 23:00 run self-sufficient on a fresh instance.
BATCH_SELECTION = (dg.AssetSelection.assets("users_app_batch_client_data").upstream() | dg.AssetSelection.groups("batch")
                   | dg.AssetSelection.assets("lake_downloads_batch"))

batch_job = dg.define_asset_job(
    JOB_NAME,
    selection=BATCH_SELECTION,
    partitions_def=daily_partitions,
    # The steps form one chain (client data -> drop -> ETL -> warehouse), so a process per step
    # buys no parallelism and costs a Python start and a code load for each; a year's backfill
    # runs them one after the other in the run's own process.
    executor_def=dg.in_process_executor,
    description="One day (or, as a backfill, a whole range in one run) of the batch path: client drop "
    "-> landing CSV -> curated Parquet + rejected rows -> downloads_batch.",
)


def partition_key_at(scheduled: dt.datetime, timezone: str) -> str:
    """The partition a 23:00 tick fills: the tick's own day in the configured timezone."""
    return scheduled.astimezone(ZoneInfo(timezone)).date().isoformat()


def build_batch_schedule(settings: Settings | None = None) -> dg.ScheduleDefinition:
    """Daily at 23:00 in APPDATA_TIMEZONE for that day's partition; on by default (`appdata up`)."""
    timezone = (settings or Settings.from_env()).timezone

    @dg.schedule(
        name=SCHEDULE_NAME,
        job=batch_job,
        cron_schedule="0 23 * * *",
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"The batch client's drop, every day at 23:00 ({timezone}), for that day's partition.",
    )
    def _batch_daily_at_23(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        key = partition_key_at(context.scheduled_execution_time, timezone)
        return dg.RunRequest(run_key=key, partition_key=key)

    return _batch_daily_at_23


batch_daily_at_23 = build_batch_schedule()
