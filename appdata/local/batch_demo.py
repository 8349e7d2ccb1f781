"""The batch path end to end for a few days, and a per-day table of rows per stage that must reconcile.

`run_batch_demo` runs what a data engineer would launch from the UI: the sources and the batch
assets over a date range as ONE single-run backfill (in process, on the current configuration:
emulator or AWS, DuckDB / PostgreSQL / Redshift). `stage_counts` then counts each stage where
it is stored (client files, S3 landing / curated / rejected, the warehouse), not from metadata.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any, Iterable, Sequence

import dagster as dg
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from appdata.config import Settings
from appdata.local.instance import local_instance

STAGES = ("client", "landing", "curated", "rejected", "warehouse")
# The run tags Dagster itself gives a single-run backfill of a partition range (`dg.materialize`
# takes one partition key only).
PARTITION_RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def contiguous_ranges(days: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """[(first, last)] runs of consecutive days, so each run is one single-run backfill."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(set(days)):
        if ranges and day == ranges[-1][1] + dt.timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def batch_assets() -> list:
    """Sources the client data is made of, the client data itself, the batch group and the lake
    table's batch rows (what job batch_daily runs)."""
    from appdata.defs.batch.assets import curated_batch, downloads_batch, landing_batch
    from appdata.defs.lake.assets import lake_downloads_batch
    from appdata.defs.sources import playstore_apps, playstore_apps_raw, users_app_batch_client_data, users_batch

    return [playstore_apps_raw, playstore_apps, users_batch, users_app_batch_client_data,
            landing_batch, curated_batch, downloads_batch, lake_downloads_batch]


def materialize_range(
    first: dt.date,
    last: dt.date,
    resources: dict[str, Any],
    *,
    instance: dg.DagsterInstance | None = None,
    run_config: dict | None = None,
    raise_on_error: bool = True,
    selection: Any = None,
) -> dg.ExecuteInProcessResult:
    """One in-process run over [first, last], tagged like a single-run backfill of that range.

    `selection` narrows what runs (e.g. only the partitioned assets, loading the catalogue and
    users an earlier run on the same instance stored).
    """
    tags = dict(zip(PARTITION_RANGE_TAGS, (first.isoformat(), last.isoformat())))
    return dg.materialize(batch_assets(), resources=resources, instance=instance, tags=tags,
                          run_config=run_config, raise_on_error=raise_on_error, selection=selection)


PARTITIONED = ["users_app_batch_client_data", "landing_batch", "curated_batch", "downloads_batch",
               "lake_downloads_batch"]


def stage_counts(settings: Settings, days: Sequence[dt.date], resources: dict[str, Any] | None = None) -> list[dict]:
    """Rows of each day at each stage, counted where they are stored."""
    from appdata.batch import etl, lake
    from appdata.contract import layout
    from appdata.defs.resources import build_resources
    from appdata.sources.client_files import batch_day_path
    from appdata.warehouse import loader

    resources = resources or build_resources(settings)
    s3 = resources["s3"]
    client = s3.get_client()
    wanted = set(days)
    rejected: dict[dt.date, int] = {d: 0 for d in wanted}
    for landing_day, keys in lake.rejected_keys_by_landing_day(client, s3.bucket, wanted).items():
        rejected[landing_day] += sum(1 for key in keys
                                     for line in lake.get_bytes(client, s3.bucket, key).splitlines() if line.strip())

    landing_files = lake.landing_keys_by_day(client, s3.bucket, sorted(wanted)) if wanted else {}
    with resources["warehouse"].connect() as engine:
        table = []
        for day in sorted(wanted):
            row: dict[str, Any] = {"day": day.isoformat()}
            path = batch_day_path(settings.client_dir, day)
            row["client"] = pq.ParquetFile(path).metadata.num_rows if path.exists() else None
            # landing: every CSV of the day, split as the ETL splits them (the drop + replayed fixes)
            per_file = {key: etl.count_landing_rows(lake.get_bytes(client, s3.bucket, key))
                        for key in landing_files.get(day, [])}
            drop = next((k for k in layout.landing_drop_keys(day) if k in per_file), None)
            row["dropped"] = per_file.get(drop)
            row["landing"] = sum(per_file.values()) if drop in per_file else None
            try:
                body = lake.get_bytes(client, s3.bucket, layout.curated_key(day))
                row["curated"] = pq.ParquetFile(io.BytesIO(body)).metadata.num_rows
            except ClientError:
                row["curated"] = None
            row["rejected"] = rejected[day]
            row["warehouse"] = loader.count_rows(engine, "downloads_batch", "download_date = :day", {"day": day})
            table.append(row)
        return table


def reconcile(table: Sequence[dict]) -> list[str]:
    """Every way the stages disagree, one line per problem; empty when they reconcile."""
    problems = []
    for row in table:
        day = row["day"]
        missing = [s for s in STAGES if row.get(s) is None]
        if missing:
            problems.append(f"{day}: no {', '.join(missing)}")
            continue
        dropped = row.get("dropped", row["landing"])  # replayed fixes add landing rows the client never had
        if row["client"] != dropped:
            problems.append(f"{day}: client {row['client']} != landing drop {dropped}")
        if row["landing"] != row["curated"] + row["rejected"]:
            problems.append(f"{day}: landing {row['landing']} != curated {row['curated']} + rejected {row['rejected']}")
        if row["warehouse"] != row["curated"]:
            problems.append(f"{day}: warehouse {row['warehouse']} != curated {row['curated']}")
    return problems


def reconciles(table: Sequence[dict]) -> bool:
    return not reconcile(table)


def run_batch_demo(
    settings: Settings,
    days: Sequence[dt.date],
    *,
    resources: dict[str, Any] | None = None,
    instance: dg.DagsterInstance | None = None,
) -> list[dict]:
    """Materialize sources + batch for `days` end to end (one run per contiguous range) and count.

    Creates the bucket and warehouse tables if missing. Returns one dict per day with the rows
    at each stage: client, landing, curated, rejected, warehouse (see `reconcile`).
    """
    from appdata.local.provision import ensure_bucket
    from appdata.defs.resources import build_resources
    from appdata.warehouse.loader import create_schema

    if not days:
        raise ValueError("run_batch_demo needs at least one day")
    resources = resources or build_resources(settings)
    ensure_bucket(resources["s3"])
    with resources["warehouse"].connect() as engine:
        create_schema(engine)
    owned = instance is None
    instance = instance or local_instance(settings)
    try:
        for first, last in contiguous_ranges(days):
            materialize_range(first, last, resources, instance=instance)
    finally:
        if owned:
            instance.dispose()
    return stage_counts(settings, days, resources)


def format_table(table: Sequence[dict]) -> str:
    """A plain text table: day and rows per stage, with totals."""
    header = ["day", *STAGES]
    totals = {s: sum(r[s] or 0 for r in table) for s in STAGES}
    rows = [[str(r.get(c, "")) if r.get(c) is not None else "-" for c in header] for r in table]
    rows.append(["total", *[str(totals[s]) for s in STAGES]])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def to_json(table: Sequence[dict]) -> str:
    return json.dumps(list(table), indent=1)
