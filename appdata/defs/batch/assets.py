"""Batch assets (group `batch`): the client's 23:00 CSV drop, the ETL, the warehouse load.

Every asset is partitioned by day and backfills a whole range as ONE run (single-run backfill
policy): the code iterates the run's time window (`partition_days`), never a single key, so a
year is one process, one validation pass per 100k rows and one warehouse transaction instead
of 366 runs at ~5 s each.
"""

import datetime as dt
import tempfile
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa
from botocore.exceptions import ClientError

from appdata import aws
from appdata.batch import etl, lake
from appdata.defs.resources import TRANSIENT_IO_RETRY, LakeS3Resource, SimulatedClientsResource, WarehouseResource
from appdata.contract import deadletters, layout
from appdata.contract.schema import EVENT_COLUMNS
from appdata.defs.metadata import preview
from appdata.defs.partitions import daily_partitions, partition_days
from appdata.privacy import forgotten
from appdata.privacy.erase import rows_without
from appdata.sources.client_files import batch_day_path
from appdata.warehouse import loader, redshift

GROUP = "batch"
PROGRESS_EVERY = 30  # days between progress lines in long backfills
PREVIEW_ROWS = 5
# Never shown in metadata or logs: Dagster's event log keeps metadata for good, where no erasure reaches.
PII_COLUMNS = ["user_id", "name", "age", "location"]


def _window_metadata(per_day: dict[dt.date, int]) -> dict:
    """Row counts per partition: a plain value for one day, a compact JSON for a window."""
    days = sorted(per_day)
    meta: dict = {"dagster/row_count": int(sum(per_day.values())), "partitions": len(days)}
    if days:
        meta["first_day"] = days[0].isoformat()
        meta["last_day"] = days[-1].isoformat()
    meta["rows_per_partition"] = dg.MetadataValue.json({d.isoformat(): int(per_day[d]) for d in days})
    return meta


def _keys_metadata(bucket: str, keys: list[str], limit: int = 50) -> dg.MetadataValue:
    shown = [lake.s3_uri(bucket, k) for k in keys[:limit]]
    if len(keys) > limit:
        shown.append(f"... and {len(keys) - limit} more")
    return dg.MetadataValue.json(shown)


def _preview(frame: pd.DataFrame) -> dg.MetadataValue:
    return preview(frame.drop(columns=[c for c in PII_COLUMNS if c in frame.columns]), PREVIEW_ROWS)


def _progress(context: dg.AssetExecutionContext, what: str, number: int, total: int, started: float,
              counts: dict[str, int], *, force: bool = False) -> None:
    """Every PROGRESS_EVERY days and after the last: the rows really processed so far, by stage.

    e.g. `curated: 30/366 days, 770 rows read, 0 curated, 0 rejected, 770 awaiting validation, 1.2s`
    (rows are validated in batches of ~100k across days, so a window of small days is validated
    at its end: the line says so instead of claiming 0 rows).
    """
    if force or number % PROGRESS_EVERY == 0 or number == total:
        done = ", ".join(f"{n:,} {label}" for label, n in counts.items())
        context.log.info(f"{what}: {number}/{total} days, {done}, {time.monotonic() - started:.1f}s")


def _etl_counts(work: etl.WindowETL, refused: dict) -> dict[str, int]:
    """Rows of the days handed to the ETL so far: read = curated + rejected + awaiting validation."""
    days = list(work.days.values())
    read = sum(o.landing_rows for o in days)
    curated = sum(o.curated_rows for o in days)
    rejected = sum(o.rejected_rows for o in days)
    counts = {"rows read": read, "curated": curated, "rejected": rejected, "awaiting validation": read - curated - rejected}
    if refused:
        counts["days refused"] = len(refused)
    return counts


@dg.asset(
    group_name=GROUP,
    retry_policy=TRANSIENT_IO_RETRY,
    kinds={"s3", "csv"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["users_app_batch_client_data"],
    description="The batch client's 23:00 drop: the day's rows as CSV in "
    "s3://<bucket>/landing/batch/download_date=YYYY-MM-DD/users_app_batch_client_data.csv "
    "(overwritten on re-run, so re-dropping a day is idempotent; a compressed drop "
    "users_app_batch_client_data.csv.gz of that day is deleted, so the day has one drop).",
)
def landing_batch(context: dg.AssetExecutionContext, s3: LakeS3Resource, clients: SimulatedClientsResource
                  ) -> dg.MaterializeResult:
    client = s3.get_client()
    days = partition_days(context)
    per_day: dict[dt.date, int] = {}
    keys: list[str] = []
    preview = None
    started = time.monotonic()
    existing = lake.landing_keys_by_day(client, s3.bucket, days)
    with tempfile.TemporaryDirectory(prefix="appdata-landing-") as tmp, lake.BackgroundIO() as uploads:
        for number, day in enumerate(days, start=1):
            path = batch_day_path(clients.client_path, day)
            if not path.exists():
                raise dg.Failure(
                    description=f"the batch client has no data for {day} (expected {path}); materialize "
                    f"users_app_batch_client_data for this day first",
                    metadata={"missing_day": day.isoformat()}, allow_retries=False,
                )
            table = pq.read_table(path).select(list(EVENT_COLUMNS))
            local = Path(tmp) / f"drop-{day.isoformat()}.csv"
            pacsv.write_csv(table, local)
            key = layout.landing_key(day)
            uploads.submit(lake.upload, client, s3.bucket, key, local, remove=True)
            compressed = layout.landing_drop_keys(day)[1]
            if compressed in existing.get(day, []):  # an earlier compressed drop: this one replaces it
                uploads.submit(client.delete_object, Bucket=s3.bucket, Key=compressed)
            per_day[day] = table.num_rows
            keys.append(key)
            if preview is None and table.num_rows:
                preview = table.slice(0, PREVIEW_ROWS).to_pandas()
            _progress(context, "landing", number, len(days), started, {"rows written": sum(per_day.values())})
    return dg.MaterializeResult(
        metadata={
            **_window_metadata(per_day),
            "s3_keys": _keys_metadata(s3.bucket, keys),
            "preview": _preview(preview if preview is not None else pd.DataFrame()),
        }
    )


def _check(name: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset="curated_batch", blocking=True, description=description)


@dg.asset(
    group_name=GROUP,
    retry_policy=TRANSIENT_IO_RETRY,
    kinds={"s3", "parquet"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[landing_batch],
    check_specs=[
        _check("landing_rows_reconcile", "Every landing row is either curated or rejected: landing = curated + rejected, per day."),
        _check("no_null_keys", "No curated row lacks event_id, user_id or download_date."),
        _check("no_duplicate_event_id", "No event_id appears twice in a day's curated file."),
    ],
    description="The ETL (what Glue did): every landing CSV of the day (the client's drop, plain or "
    "gzip-compressed `.csv.gz`, then replayed fixes `replay-<hash>.csv` in name order) validated row by row "
    "(appdata.contract.schema), "
    "deduplicated by event_id across those files and written as typed Parquet to s3://<bucket>/curated/batch/"
    "download_date=YYYY-MM-DD/part.parquet; rejected rows, with row number, field and reason, go to "
    "s3://<bucket>/rejected/batch/. A file whose header is missing or wrong, or that is no UTF-8 "
    "comma-separated text, is refused whole.",
)
def curated_batch(context: dg.AssetExecutionContext, s3: LakeS3Resource) -> dg.MaterializeResult:
    client = s3.get_client()
    days = partition_days(context)
    rejected_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    stale_rejected = lake.rejected_keys_by_landing_day(client, s3.bucket, set(days))
    outputs: list[etl.DayOutput] = []
    refused: dict[dt.date, str] = {}
    keys: list[str] = []
    deleted: list[str] = []
    preview_valid: pd.DataFrame | None = None
    checked: dict[dt.date, dict] = {}
    started = time.monotonic()

    def publish(out: etl.DayOutput) -> None:
        nonlocal preview_valid
        written = pq.read_table(out.parquet_path, columns=list(etl.KEY_COLUMNS))
        checked[out.day] = {
            "rows": written.num_rows,
            "null_keys": sum(written.column(c).null_count for c in etl.KEY_COLUMNS),
            "duplicates": written.num_rows - pc.count_distinct(written.column("event_id")).as_py(),
        }
        if preview_valid is None and written.num_rows:
            preview_valid = next(pq.ParquetFile(out.parquet_path).iter_batches(batch_size=PREVIEW_ROWS)).to_pandas()
        key = layout.curated_key(out.day)
        uploads.submit(lake.upload, client, s3.bucket, key, out.parquet_path, remove=True)
        keys.append(key)
        fresh = set()
        letters = deadletters.objects("batch", layout.batch_rejected_name(out.day), etl.dead_letters(out, rejected_at),
                                      lambda line: line["landing_day"])
        for rkey, body in letters.items():
            uploads.submit(client.put_object, Bucket=s3.bucket, Key=rkey, Body=body, ContentType="application/x-ndjson")
            keys.append(rkey)
            fresh.add(rkey)
        for old in sorted(stale_rejected.get(out.day, set()) - fresh):
            uploads.submit(client.delete_object, Bucket=s3.bucket, Key=old)  # a re-run that no longer rejects those rows
            deleted.append(old)
        outputs.append(out)

    landing_files = lake.landing_keys_by_day(client, s3.bucket, days)
    two_drops: dict[dt.date, str] = {}
    for day in days:
        drops = [k for k in layout.landing_drop_keys(day) if k in landing_files.get(day, [])]
        if not drops:
            raise dg.Failure(description=f"no landing file for {day} at "
                             f"{lake.s3_uri(s3.bucket, layout.landing_key(day))} (or .csv.gz); materialize "
                             "landing_batch for this day first", allow_retries=False)
        if len(drops) > 1:  # which one is the client's current drop? reading both would mix two versions
            two_drops[day] = (f"the day has two client drops, {drops[0]} and {drops[1]}: delete the stale one "
                              "(re-dropping a day replaces its file)")

    with tempfile.TemporaryDirectory(prefix="appdata-etl-") as tmp, lake.BackgroundIO() as uploads:
        work = etl.WindowETL(Path(tmp), chunk_rows=etl.CHUNK_ROWS)
        gone = forgotten.read(client, s3.bucket)
        forgotten_rows: dict[dt.date, int] = {}

        def fetch(day: dt.date) -> list[tuple[str, Path]]:
            """The day's landing files on local disk: the client's drop, then replayed fixes in name order."""
            local = []
            for index, key in enumerate(landing_files[day]):
                path = Path(tmp) / f"landing-{day.isoformat()}-{index}.csv"
                try:
                    lake.download(client, s3.bucket, key, path)
                except ClientError as exc:
                    if aws.is_missing(exc):
                        raise dg.Failure(description=f"landing file {lake.s3_uri(s3.bucket, key)} vanished "
                                         "while the ETL ran; run the day again") from exc
                    raise
                if gone:  # forgotten users' rows leave the landing file before the ETL reads it
                    scrubbed, removed = rows_without(key, path.read_bytes(), gone)
                    if removed:
                        path.write_bytes(scrubbed)
                        lake.upload(client, s3.bucket, key, path)
                        forgotten_rows[day] = forgotten_rows.get(day, 0) + removed
                local.append((key, path))
            return local

        for number, (day, local) in enumerate(zip(days, lake.prefetch(fetch, days, ahead=2)), start=1):
            files = []
            try:
                if day in two_drops:
                    raise etl.LandingRefused(day, two_drops[day])
                for key, path in local:
                    try:
                        files.append((key, etl.parse_landing(path, day)))
                    except etl.LandingRefused as exc:
                        if key in layout.landing_drop_keys(day):
                            raise
                        raise etl.LandingRefused(day, f"{key}: {exc.reason}") from exc
            except etl.LandingRefused as exc:
                refused[day] = exc.reason
                context.log.error(str(exc))
                if number < len(days):
                    _progress(context, "curated", number, len(days), started, _etl_counts(work, refused))
                continue
            finally:
                for _, path in local:
                    path.unlink(missing_ok=True)
            work.add_files(day, files)
            for out in work.pop_completed():
                publish(out)
            if number < len(days):  # the last line comes after the final validation batch
                _progress(context, "curated", number, len(days), started, _etl_counts(work, refused))
        for out in work.finish():
            publish(out)
        _progress(context, "curated", len(days), len(days), started, _etl_counts(work, refused), force=True)

    if refused:
        listing = "; ".join(f"{d}: {reason}" for d, reason in sorted(refused.items()))
        raise dg.Failure(
            description=f"{len(refused)} landing file(s) refused, nothing of them loaded: {listing}",
            metadata={"refused": dg.MetadataValue.json({d.isoformat(): r for d, r in sorted(refused.items())}),
                      "days_published": len(outputs)},
            allow_retries=False,
        )

    outputs.sort(key=lambda o: o.day)
    rejects = [dict(r, landing_day=o.day.isoformat()) for o in outputs for r in o.rejects]
    mismatched = {o.day.isoformat(): {"landing": o.landing_rows, "curated": checked[o.day]["rows"], "rejected": o.rejected_rows}
                  for o in outputs if o.landing_rows != checked[o.day]["rows"] + o.rejected_rows}
    totals = {"landing": sum(o.landing_rows for o in outputs), "curated": sum(o.curated_rows for o in outputs),
              "rejected": len(rejects)}
    null_keys = sum(c["null_keys"] for c in checked.values())
    duplicates = sum(c["duplicates"] for c in checked.values())
    if rejects:
        context.log.warning(f"{len(rejects):,} row(s) rejected; dead letters under {lake.s3_uri(s3.bucket, layout.rejected_prefix('batch'))}")
    reject_preview = pd.DataFrame([{k: r[k] for k in ("landing_day", "row", "field", "reason")} for r in rejects[:PREVIEW_ROWS]])
    return dg.MaterializeResult(
        metadata={
            **_window_metadata({o.day: o.curated_rows for o in outputs}),
            "landing_rows": totals["landing"],
            "rejected_rows": totals["rejected"],
            "rejected_per_partition": dg.MetadataValue.json({o.day.isoformat(): o.rejected_rows for o in outputs if o.rejects}),
            "parsers": dg.MetadataValue.json({p: sum(o.parser == p for o in outputs) for p in ("arrow", "python")}),
            "s3_keys": _keys_metadata(s3.bucket, keys),
            "stale_rejected_deleted": len(deleted),
            "forgotten_users_rows_dropped": sum(forgotten_rows.values()),
            "preview": _preview(preview_valid if preview_valid is not None else pd.DataFrame()),
            "rejected_preview": _preview(reject_preview),
        },
        check_results=[
            dg.AssetCheckResult(check_name="landing_rows_reconcile", passed=not mismatched,
                                metadata={**totals, "mismatched_days": dg.MetadataValue.json(mismatched)}),
            dg.AssetCheckResult(check_name="no_null_keys", passed=null_keys == 0, metadata={"null_keys": null_keys}),
            dg.AssetCheckResult(check_name="no_duplicate_event_id", passed=duplicates == 0,
                                metadata={"duplicate_event_ids": duplicates}),
        ],
    )


def _warehouse_check(name: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset="downloads_batch", blocking=True, description=description)


def read_curated(client, bucket: str, days: list[dt.date], context: dg.AssetExecutionContext):
    """Each day's curated Parquet from S3: (tables, rows per day, sizes per key)."""
    tables, per_day, sizes = [], {}, {}
    started = time.monotonic()

    def fetch(day: dt.date) -> bytes:
        key = layout.curated_key(day)
        try:
            return lake.get_bytes(client, bucket, key)
        except ClientError as exc:
            if aws.is_missing(exc):
                raise dg.Failure(description=f"no curated file for {day} at {lake.s3_uri(bucket, key)}; "
                                 "materialize curated_batch for this day first", allow_retries=False) from exc
            raise

    for number, (day, body) in enumerate(zip(days, lake.prefetch(fetch, days, ahead=2)), start=1):
        key = layout.curated_key(day)
        table = pq.read_table(pa.BufferReader(body))
        tables.append(table)
        per_day[day] = table.num_rows
        sizes[key] = len(body)
        _progress(context, "warehouse read", number, len(days), started, {"rows read": sum(per_day.values())})
    return tables, per_day, sizes


@dg.asset(
    group_name=GROUP,
    retry_policy=TRANSIENT_IO_RETRY,
    kinds={"sql", "parquet"},
    pool="warehouse",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[curated_batch],
    check_specs=[
        _warehouse_check("rows_match_curated", "The warehouse holds exactly the curated rows of every day of the window."),
        _warehouse_check("no_null_keys", "No warehouse row lacks event_id, user_id or download_date."),
        _warehouse_check("no_duplicate_event_id", "No event_id appears twice in the window."),
    ],
    description="Warehouse table downloads_batch: the run's whole window of curated Parquet replaces "
    "that window's rows in ONE transaction (delete [start, end) + bulk insert; COPY + swap on "
    "Redshift), so re-running any day or range never doubles or loses a row and no reader sees half.",
)
def downloads_batch(
    context: dg.AssetExecutionContext, s3: LakeS3Resource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    client = s3.get_client()
    days = partition_days(context)
    start, end = days[0], days[-1] + dt.timedelta(days=1)
    with warehouse.connect() as engine:
        tables, per_day, sizes = read_curated(client, s3.bucket, days, context)

        def stage_on_s3() -> str:
            """A COPY manifest of the window's curated objects (for a warehouse that loads from S3)."""
            manifest_key = layout.curated_manifest_key(start, end)
            objects = [redshift.ParquetObject(lake.s3_uri(s3.bucket, k), n) for k, n in sizes.items()]
            client.put_object(Bucket=s3.bucket, Key=manifest_key, Body=redshift.manifest(objects).encode())
            return lake.s3_uri(s3.bucket, manifest_key)

        loaded = loader.replace_window_from_arrow(engine, "downloads_batch", tables, column="download_date",
                                                  start=start, end=end, stage_on_s3=stage_on_s3,
                                                  copy_iam_role=warehouse.copy_iam_role)
        del tables
        context.log.info(f"downloads_batch: {loaded:,} rows for [{start}, {end}) in one transaction ({warehouse.dialect})")

        window = "download_date >= :start AND download_date < :end"
        params = {"start": start, "end": end}
        with engine.connect() as conn:
            counted = conn.execute(sa.text(
                f"SELECT download_date, COUNT(*) FROM downloads_batch WHERE {window} GROUP BY download_date"), params)
            in_warehouse = {(d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d)[:10])): int(n) for d, n in counted}
            duplicates = int(conn.execute(sa.text(
                f"SELECT COUNT(*) - COUNT(DISTINCT event_id) FROM downloads_batch WHERE {window}"), params).scalar_one())
        null_keys = loader.count_rows(engine, "downloads_batch",
                                      f"({window} AND (event_id IS NULL OR user_id IS NULL)) OR download_date IS NULL", params)
        mismatched = {d.isoformat(): {"warehouse": in_warehouse.get(d, 0), "curated": n}
                      for d, n in per_day.items() if in_warehouse.get(d, 0) != n}
        mismatched.update({d.isoformat(): {"warehouse": n, "curated": 0} for d, n in in_warehouse.items() if d not in per_day})
        expected = sum(per_day.values())
    return dg.MaterializeResult(
        metadata={
            **_window_metadata(per_day),
            "warehouse": warehouse.dialect,
            "window": f"[{start}, {end})",
            "s3_keys_read": _keys_metadata(s3.bucket, list(sizes)),
        },
        check_results=[
            dg.AssetCheckResult(check_name="rows_match_curated", passed=not mismatched,
                                metadata={"warehouse_rows": sum(in_warehouse.values()), "curated_rows": expected,
                                          "mismatched_days": dg.MetadataValue.json(mismatched)}),
            dg.AssetCheckResult(check_name="no_null_keys", passed=null_keys == 0, metadata={"null_keys": null_keys}),
            dg.AssetCheckResult(check_name="no_duplicate_event_id", passed=duplicates == 0,
                                metadata={"duplicate_event_ids": duplicates}),
        ],
    )

