"""Dagster definitions of the reliability concern: the reconciliation asset checks, a job that
runs them on their own, and an hourly schedule for it (stopped by default: on real AWS each
run scans the DynamoDB table once)."""

import dagster as dg


def defs() -> dg.Definitions:
    from appdata.reliability.checks import batch_reconciled, stream_reconciled

    reconciliation_job = dg.define_asset_job(
        "reconciliation_job",
        selection=dg.AssetSelection.checks(stream_reconciled, batch_reconciled),
        description="Reconcile every stream day and every batch day with landing data, by event id.",
    )
    return dg.Definitions(
        asset_checks=[stream_reconciled, batch_reconciled],
        jobs=[reconciliation_job],
        schedules=[dg.ScheduleDefinition(
            name="reconciliation_hourly", job=reconciliation_job, cron_schedule="30 * * * *",
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description="Hourly reconciliation of every sink (turn on in the UI).",
        )],
    )
