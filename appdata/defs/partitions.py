"""The daily partitions every batch asset shares, and the days of a run's window."""

import datetime as dt

import dagster as dg

from appdata.config import Settings

_settings = Settings.from_env()

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=_settings.batch_start_date,
    timezone=_settings.timezone,
    end_offset=1,  # include today, so the 23:00 run has a partition to fill
)


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """Every day in the run's partition window (one day, or a whole single-run backfill)."""
    window = context.partition_time_window
    start = window.start.date()
    days = (window.end.date() - start).days
    return [start + dt.timedelta(days=i) for i in range(days)]
