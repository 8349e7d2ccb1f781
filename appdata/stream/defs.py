"""Dagster definitions of the `stream` group: the drain assets and sensor, the client schedule."""

import dagster as dg


def defs() -> dg.Definitions:
    from appdata.stream.assets import kinesis_downloads, stream_drain, stream_drain_job
    from appdata.stream.schedule import stream_client_every_minute, stream_client_job
    from appdata.stream.sensor import kinesis_drain_sensor

    return dg.Definitions(
        assets=[kinesis_downloads, stream_drain],
        jobs=[stream_drain_job, stream_client_job],
        sensors=[kinesis_drain_sensor],
        schedules=[stream_client_every_minute],
    )
