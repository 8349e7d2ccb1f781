"""The code location: every concern's definitions assembled explicitly, plus resources.

Each concern (sources, batch, stream, analytics, api, reliability) owns a `defs()` that returns
its assets, checks, jobs, schedules and sensors; nothing here does I/O at import time. (The
warehouse package holds no assets: its tables are written by `downloads_batch`, the stream
drain and the marts.)
"""

import dagster as dg

from appdata.analytics import defs as analytics
from appdata.api import defs as api
from appdata.batch import defs as batch
from appdata.reliability import defs as reliability
from appdata.resources import build_resources
from appdata.sources import defs as sources
from appdata.stream import defs as stream


def build_definitions() -> dg.Definitions:
    return dg.Definitions.merge(
        sources.defs(),
        batch.defs(),
        stream.defs(),
        analytics.defs(),
        api.defs(),
        reliability.defs(),
        dg.Definitions(resources=build_resources()),
    )


defs = build_definitions()
