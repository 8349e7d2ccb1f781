"""Keeping the downloads table cheap to read: few files per day, bounded history, no stray files.

The stream commits every ~30 s, so a busy day gathers thousands of small files; a reader opens
every one. `compact_partition` rewrites one (day, source) partition's rows into as few files as
the target size allows, in one commit (readers see the old files or the new, never neither).
`expire_snapshots` drops snapshots older than the retention (time travel reaches back that far,
and an erased user's rows are gone from every snapshot after it); `remove_orphan_files` deletes
files under the table's location that no remaining snapshot references (left by expiry, by
compaction, or by a writer that died before its commit), once they are older than a grace
period, so a commit in flight never loses its files.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
from pyiceberg.expressions import And, EqualTo
from pyiceberg.table import Table, Transaction

from appdata import aws
from appdata.lake.tables import commit

SNAPSHOT_RETENTION = dt.timedelta(days=1)  # ~2,900 stream commits a day: history stays a day long
ORPHAN_GRACE = dt.timedelta(days=1)
SMALL_FILES = 4  # a partition with more data files than this is compacted


@dataclass
class PartitionFiles:
    day: dt.date
    source: str
    files: int
    bytes: int
    rows: int


def files_by_partition(table: Table) -> list[PartitionFiles]:
    """Data files, bytes and rows per (download_date, source) in the current snapshot."""
    if table.current_snapshot() is None:
        return []
    files = table.inspect.files().select(["partition", "file_size_in_bytes", "record_count"]).to_pylist()
    totals: dict[tuple[dt.date, str], list[int]] = {}
    for row in files:
        key = (row["partition"]["download_date"], row["partition"]["source"])
        total = totals.setdefault(key, [0, 0, 0])
        total[0] += 1
        total[1] += row["file_size_in_bytes"]
        total[2] += row["record_count"]
    return [PartitionFiles(day, source, *total) for (day, source), total in sorted(totals.items())]


@dataclass
class Compaction:
    day: dt.date
    source: str
    files_before: int
    files_after: int
    bytes_before: int
    bytes_after: int
    rows: int


def compact_partition(table: Table, day: dt.date, source: str) -> Compaction:
    """Rewrite the partition's rows into as few files as the target size allows, in one commit;
    a concurrent commit makes it read and rewrite again (`tables.commit`)."""
    before = _partition(table, day, source)
    where = And(EqualTo("download_date", day.isoformat()), EqualTo("source", source))

    def change(table: Table, transaction: Transaction) -> int:
        rows: pa.Table = table.scan(row_filter=where).to_arrow()
        transaction.overwrite(rows, overwrite_filter=where)
        return rows.num_rows

    rows = commit(table, change)
    after = _partition(table, day, source)
    return Compaction(day, source, before.files, after.files, before.bytes, after.bytes, rows)


def _partition(table: Table, day: dt.date, source: str) -> PartitionFiles:
    found = [p for p in files_by_partition(table) if p.day == day and p.source == source]
    return found[0] if found else PartitionFiles(day, source, 0, 0, 0)


def expire_snapshots(table: Table, *, now: dt.datetime, retention: dt.timedelta = SNAPSHOT_RETENTION) -> int:
    """Drop snapshots older than `retention` (never the current one); returns how many."""
    before = len(table.snapshots())
    table.maintenance.expire_snapshots().older_than(now - retention).commit()
    table.refresh()
    return before - len(table.snapshots())


def referenced_files(table: Table) -> set[str]:
    """Every file a snapshot of the table still needs: data files, manifests, manifest lists and
    the metadata files of its log."""
    table.refresh()
    metadata = table.metadata
    paths = {table.metadata_location}
    paths.update(entry.metadata_file for entry in metadata.metadata_log)
    paths.update(snapshot.manifest_list for snapshot in metadata.snapshots)
    if metadata.snapshots:
        paths.update(table.inspect.all_manifests().column("path").to_pylist())
        paths.update(table.inspect.all_files().column("file_path").to_pylist())
    paths.update(statistics.statistics_path for statistics in metadata.statistics)
    return paths


@dataclass
class OrphanSweep:
    listed: int
    removed: list[str]


def remove_orphan_files(table: Table, s3: Any, *, now: dt.datetime, grace: dt.timedelta = ORPHAN_GRACE) -> OrphanSweep:
    """Delete objects under the table's location that no snapshot references and that are older
    than `grace`; returns what was listed and removed."""
    location = urlparse(table.location())
    bucket, prefix = location.netloc, location.path.lstrip("/").rstrip("/") + "/"
    referenced = {urlparse(path).path.lstrip("/") for path in referenced_files(table)}
    listed, removed = 0, []
    for item in aws.list_objects(s3, bucket, prefix):
        listed += 1
        if item["Key"] not in referenced and item["LastModified"] < now - grace:
            removed.append(item["Key"])
    for start in range(0, len(removed), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in removed[start:start + 1000]],
                                                 "Quiet": True})
    return OrphanSweep(listed, removed)


def partition_counts(table: Table) -> Counter:
    """Rows per (day, source), from the files' own record counts (no data read)."""
    return Counter({(p.day, p.source): p.rows for p in files_by_partition(table)})


def expire_all_but_current(table: Table, s3: Any) -> list[str]:
    """Expire every snapshot but the current one and delete the files only they referenced (an
    erasure: no time travel may reach deleted rows); files of commits in flight are new files no
    expired snapshot referenced, so they are never touched. Returns the keys deleted."""
    table.refresh()
    current = table.current_snapshot()
    if current is None:
        return []
    before = referenced_files(table)
    older = [s.snapshot_id for s in table.snapshots() if s.snapshot_id != current.snapshot_id]
    if older:
        table.maintenance.expire_snapshots().by_ids(older).commit()
    after = referenced_files(table)
    gone = sorted(urlparse(path).path.lstrip("/") for path in before - after if path.startswith("s3://"))
    bucket = urlparse(table.location()).netloc
    for start in range(0, len(gone), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in gone[start:start + 1000]],
                                                 "Quiet": True})
    return gone
