"""Dagster definitions of the reliability concern: the reconciliation asset checks, a job that
runs them on their own, and an hourly schedule for it (stopped by default: on real AWS each
run scans the DynamoDB table once); the stream client's delivery check every 5 minutes (on by
default: cheap, and it is what turns red when the client posts but nothing is drained)."""

import dagster as dg


def defs() -> dg.Definitions:
    from appdata.reliability.checks import batch_reconciled, stream_client_delivered, stream_reconciled

    reconciliation_job = dg.define_asset_job(
        "reconciliation_job",
        selection=dg.AssetSelection.checks(stream_reconciled, batch_reconciled),
        description="Reconcile every stream day and every batch day with landing data, by event id.",
    )
    delivery_job = dg.define_asset_job(
        "stream_delivery_check_job",
        selection=dg.AssetSelection.checks(stream_client_delivered),
        executor_def=dg.in_process_executor,
        description="Is every event the stream client had accepted in downloads_stream?",
    )
    return dg.Definitions(
        asset_checks=[stream_reconciled, batch_reconciled, stream_client_delivered],
        jobs=[reconciliation_job, delivery_job],
        schedules=[
            dg.ScheduleDefinition(
                name="reconciliation_hourly", job=reconciliation_job, cron_schedule="30 * * * *",
                default_status=dg.DefaultScheduleStatus.STOPPED,
                description="Hourly reconciliation of every sink (turn on in the UI).",
            ),
            dg.ScheduleDefinition(
                name="stream_delivery_every_5_minutes", job=delivery_job, cron_schedule="*/5 * * * *",
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description="The stream client's accepted events must reach downloads_stream.",
            ),
        ],
    )
