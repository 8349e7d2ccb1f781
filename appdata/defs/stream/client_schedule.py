"""The every-minute stream client: posts the next rows of the client CSV (the seed's cadence).

The schedule only checks that the API and the CSV are there (a down API is a skipped tick
with a reason, never a failing run every minute); the run posts the next batch and moves the
cursor under $APPDATA_HOME/client/stream/.
"""

import dagster as dg

from appdata.defs.resources import RUN_MEMORY_IO_MANAGER, IngestApiResource, SimulatedClientsResource

BATCH_PER_MINUTE = 100


@dg.op(description="POST the next client rows to the ingest API and advance the cursor.",
       out=dg.Out(io_manager_key=RUN_MEMORY_IO_MANAGER))
def post_next_client_batch(context: dg.OpExecutionContext, clients: SimulatedClientsResource,
                           ingest_api: IngestApiResource) -> dg.Output[dict]:
    from appdata.sources.client_files import stream_csv_path, stream_cursor_path, stream_ledger_path
    from appdata.stream.client import ApiUnavailable, send_next_batch

    path = stream_csv_path(clients.client_path)
    if not path.exists():
        context.log.warning(f"no client data at {path}; materialize users_app_stream_client_data first")
        return dg.Output({"status": "no client data"})
    try:
        outcome = send_next_batch(path, stream_cursor_path(clients.client_path), api_url=ingest_api.url,
                                  key=ingest_api.api_key(), batch_size=BATCH_PER_MINUTE,
                                  ledger_path=stream_ledger_path(clients.client_path))
    except ApiUnavailable as exc:
        context.log.warning(f"skipped: {exc}; the cursor did not move, the next tick resends these rows")
        return dg.Output({"status": "api unavailable"})
    event_ids = outcome.pop("event_ids", [])
    context.log.info(f"stream client: {outcome}")
    return dg.Output({**outcome, "event_ids": event_ids},
                     metadata={k: v for k, v in outcome.items() if isinstance(v, (int, str))})


@dg.job(name="stream_client_job", description="The stream client posting its next batch of events.",
        tags={"appdata/concern": "stream-client"}, executor_def=dg.in_process_executor)
def stream_client_job():
    post_next_client_batch()


@dg.schedule(
    name="stream_client_every_minute",
    cron_schedule="* * * * *",
    job=stream_client_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every minute, the stream client posts its next 100 events to the ingest API.",
)
def stream_client_every_minute(context: dg.ScheduleEvaluationContext, clients: SimulatedClientsResource,
                               ingest_api: IngestApiResource):
    from appdata.sources.client_files import stream_csv_path
    from appdata.stream.client import api_is_up

    if not stream_csv_path(clients.client_path).exists():
        return dg.SkipReason("no stream client data yet: materialize users_app_stream_client_data")
    if not api_is_up(ingest_api.url):
        context.log.warning(f"ingest API not answering at {ingest_api.url}; skipping this minute")
        return dg.SkipReason(f"ingest API not answering at {ingest_api.url}")
    return dg.RunRequest()
