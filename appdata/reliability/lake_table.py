"""The lake's Iceberg table reconciled with the warehouse, event by event and day by day.

The warehouse tables are already held to their sources (`reconcile`: the stream's accepted
events, the batch's curated rows), so the table is held to them: per download_date and source,
every event of `downloads_stream` / `downloads_batch` is in the table exactly once and nothing
else is. The stream's rows reach the table up to ~30 s after the warehouse; the table is first
brought up to where the drain has delivered (`sync`), and events still missing are looked up
once more after a second sync, so only an event the table really lacks turns the check red.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import sqlalchemy as sa
from pyiceberg.table import Table

from appdata.lake import tables
from appdata.reliability.reconcile import DayReconciliation, compare

WAREHOUSE_TABLE = {tables.STREAM: "downloads_stream", tables.BATCH: "downloads_batch"}


def _warehouse_ids(engine: sa.Engine) -> dict[tuple[str, str], Counter]:
    found: dict[tuple[str, str], Counter] = {}
    with engine.connect() as conn:
        for source, name in WAREHOUSE_TABLE.items():
            for day, event_id in conn.execute(sa.text(f"SELECT download_date, event_id FROM {name}")):
                found.setdefault((source, str(day)[:10]), Counter())[event_id] += 1
    return found


def _table_ids(table: Table) -> dict[tuple[str, str], Counter]:
    table.refresh()
    found: dict[tuple[str, str], Counter] = {}
    rows = tables.scan(table, columns=("source", "download_date", "event_id"))
    for source, day, event_id in zip(*(rows.column(c).to_pylist() for c in ("source", "download_date", "event_id"))):
        found.setdefault((source, day.isoformat()), Counter())[event_id] += 1
    return found


def reconcile_lake_table(table: Table, engine: sa.Engine, sync: Callable[[], object]) -> list[DayReconciliation]:
    """One result per (source, day) either side holds; `sync` brings the table's stream rows up
    to what the drain has delivered (`appdata.stream.table_writer.sync_stream_table`)."""
    sync()
    warehouse = _warehouse_ids(engine)
    held = _table_ids(table)
    if any(set(ids) - set(held.get(key, {})) for key, ids in warehouse.items() if key[0] == tables.STREAM):
        sync()  # the drain delivered more between the first sync and the warehouse read
        held = _table_ids(table)
    results = []
    for source, day in sorted(set(warehouse) | set(held), key=lambda key: (key[1], key[0])):
        reference = warehouse.get((source, day), Counter())
        found = held.get((source, day), Counter())
        counts = {WAREHOUSE_TABLE[source]: sum(reference.values()), "lake_table": sum(found.values())}
        results.append(DayReconciliation(f"lake {source}", day, counts,
                                         [compare("lake table", WAREHOUSE_TABLE[source], set(reference), found)]))
    return results
