"""Dagster definitions of the `batch` group: assets (with their checks), job and schedule."""

import dagster as dg


def defs() -> dg.Definitions:
    from appdata.batch.assets import assets
    from appdata.batch.schedules import batch_job, build_batch_schedule

    return dg.Definitions(assets=assets, jobs=[batch_job], schedules=[build_batch_schedule()])
