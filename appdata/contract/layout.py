"""Every S3 key of the bucket, in one place.

    landing/batch/download_date=D/users_app_batch_client_data.csv[.gz]  the client's 23:00 drop
    landing/batch/download_date=D/replay-<hash>.csv                     replayed fixes of batch rows
    curated/batch/download_date=D/part.parquet                          the ETL's typed day
    curated/_manifests/downloads_batch/<start>_<end>.manifest           Redshift COPY of a window
    lake/stream/download_date=D/hour=H/<shard>-<first>-<last>.jsonl.gz  one drained range (raw archive)
    tables/<namespace>.db/downloads/{data,metadata}/...                 the Iceberg table (appdata.lake.tables)
    manifests/stream/<shard>-<first>-<last>.manifest                    Redshift COPY of a range
    rejected/<source>/download_date=D/<name>.jsonl                      dead letters (api, stream, batch)
    rejected/_replayed/<source>/...                                     dead letters already replayed
    privacy/forgotten/<user_id>                                         users who asked to be forgotten
    privacy/requests/<request_id>.json                                  the erasure request log (no personal data)
    reports/appdata_report.html                                         the analytics report
    models/recommender/model.npz                                        the fitted recommender (npz, no pickle)
    assets/<asset path>/<partition key or "all">.parquet                a DataFrame asset's value

Every name is derived from what it holds (day, shard and sequence range, request body, landing
day), so a retried write overwrites the same object instead of adding a second one.
"""

from __future__ import annotations

import datetime as dt
import re

LANDING = "landing/batch/"
CURATED = "curated/batch/"
LAKE = "lake/stream/"
TABLES = "tables/"  # the Iceberg warehouse: pyiceberg names everything below it
REJECTED = "rejected/"
REPLAYED = "rejected/_replayed/"
DEAD_LETTER_SOURCES = ("api", "stream", "batch")
REPORT_KEY = "reports/appdata_report.html"
FORGOTTEN = "privacy/forgotten/"
ERASURE_REQUESTS = "privacy/requests/"
# The latest fitted recommender, overwritten by each full refit; read by the incremental refresh.
RECOMMENDER_MODEL_KEY = "models/recommender/model.npz"
ASSETS = "assets/"
UNPARTITIONED = "all"

LANDING_NAME = "users_app_batch_client_data"
# A landing file is a CSV, or a gzip-compressed one (clients compress; the ETL also decompresses
# any file that starts with gzip's magic bytes, whatever its name).
LANDING_SUFFIXES = (".csv", ".csv.gz")

_LANDING_DAY = re.compile(rf"^{LANDING}download_date=(\d{{4}}-\d{{2}}-\d{{2}})/[^/]+$")
_BATCH_REJECTED_NAME = re.compile(
    rf"^{REJECTED}batch/download_date=[^/]+/{LANDING_NAME}-(\d{{4}}-\d{{2}}-\d{{2}})\.jsonl$")


def partition(prefix: str, day: dt.date | str) -> str:
    """`<prefix>download_date=D/`: the Hive-style day partition every area of the bucket uses."""
    return f"{prefix}download_date={day if isinstance(day, str) else day.isoformat()}/"


def day_of_partition(key: str) -> str | None:
    """D of the first `download_date=D` segment of a key."""
    return next((part.split("=", 1)[1] for part in key.split("/") if part.startswith("download_date=")), None)


# ---- batch


def landing_key(day: dt.date) -> str:
    return f"{partition(LANDING, day)}{LANDING_NAME}.csv"


def landing_drop_keys(day: dt.date) -> tuple[str, str]:
    """The client's drop of the day: `<name>.csv`, or `<name>.csv.gz` when the client compresses."""
    plain = landing_key(day)
    return plain, plain + ".gz"


def is_landing_file(key: str) -> bool:
    return key.endswith(LANDING_SUFFIXES)


def landing_day_of(key: str) -> dt.date | None:
    match = _LANDING_DAY.match(key)
    return dt.date.fromisoformat(match.group(1)) if match else None


def replay_landing_key(day: str, digest: str) -> str:
    """A fixed batch record goes back in by the door it came in: the day's landing prefix."""
    return f"{partition(LANDING, day)}replay-{digest}.csv"


def curated_key(day: dt.date) -> str:
    return f"{partition(CURATED, day)}part.parquet"


def curated_manifest_key(start: dt.date, end: dt.date) -> str:
    return f"curated/_manifests/downloads_batch/{start.isoformat()}_{end.isoformat()}.manifest"


# ---- stream


def range_name(shard_id: str, first_sequence: str, last_sequence: str) -> str:
    return f"{shard_id}-{first_sequence}-{last_sequence}"


def lake_key(day: str, hour: str, shard_id: str, first_sequence: str, last_sequence: str) -> str:
    return f"{partition(LAKE, day)}hour={hour}/{range_name(shard_id, first_sequence, last_sequence)}.jsonl.gz"


def stream_manifest_key(shard_id: str, first_sequence: str, last_sequence: str) -> str:
    return f"manifests/stream/{range_name(shard_id, first_sequence, last_sequence)}.manifest"


def tables_warehouse(bucket: str) -> str:
    """The Iceberg warehouse location every catalog is given."""
    return f"s3://{bucket}/{TABLES.rstrip('/')}"


# ---- dead letters


def rejected_prefix(source: str, day: dt.date | str | None = None, *, replayed: bool = False) -> str:
    prefix = f"{REPLAYED if replayed else REJECTED}{source}/"
    return partition(prefix, day) if day is not None else prefix


def rejected_key(source: str, day: dt.date | str, name: str) -> str:
    """Dead letters of one writer (an API request, a drained range, a landing day) filed under `day`."""
    return f"{rejected_prefix(source, day)}{name}.jsonl"


def batch_rejected_name(landing_day: dt.date) -> str:
    """The landing day in the name keeps the key deterministic (a re-run overwrites it) and tells
    which run may delete it when a later run of that day has no rejects left."""
    return f"{LANDING_NAME}-{landing_day.isoformat()}"


def landing_day_of_rejected_key(key: str) -> dt.date | None:
    match = _BATCH_REJECTED_NAME.match(key)
    return dt.date.fromisoformat(match.group(1)) if match else None


def source_of_rejected_key(key: str) -> str | None:
    """`api`, `stream` or `batch` of rejected/<source>/... or rejected/_replayed/<source>/..."""
    rest = key[len(REPLAYED):] if key.startswith(REPLAYED) else key[len(REJECTED):] if key.startswith(REJECTED) else ""
    source = rest.split("/", 1)[0]
    return source if source in DEAD_LETTER_SOURCES else None


def replayed_key(key: str) -> str:
    return REPLAYED + key[len(REJECTED):]


# ---- privacy


def forgotten_key(user_id: int) -> str:
    return f"{FORGOTTEN}{int(user_id)}"


def erasure_request_key(request_id: str) -> str:
    return f"{ERASURE_REQUESTS}{request_id}.json"


# ---- Dagster asset values


def asset_value_key(asset_path: list[str] | tuple[str, ...], partition_key: str | None = None) -> str:
    """Where the IO manager keeps a DataFrame asset's value: one object per partition, or `all`."""
    return f"{ASSETS}{'/'.join(asset_path)}/{partition_key or UNPARTITIONED}.parquet"
