"""Dagster definitions of the `analytics` group: marts, recommendations, report, nightly job."""

import dagster as dg

from appdata.analytics.assets import GROUP, assets
from appdata.config import Settings


def defs() -> dg.Definitions:
    job = dg.define_asset_job(
        "analytics_job", selection=dg.AssetSelection.groups(GROUP),
        description="Rebuild the marts, every user's recommendations and the HTML report.",
    )
    nightly = dg.ScheduleDefinition(
        name="analytics_nightly", job=job, cron_schedule="45 23 * * *",
        execution_timezone=Settings.from_env().timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
        description="After the 23:00 batch drop has been loaded; stream users are refreshed by each drain.",
    )
    return dg.Definitions(assets=assets, jobs=[job], schedules=[nightly])
