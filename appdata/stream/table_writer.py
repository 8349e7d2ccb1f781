"""The stream's rows into the lake's Iceberg table, in commits of about `commit_seconds`.

The shard consumer delivers a range about a second after it arrives (DynamoDB is the real-time
path); committing each range to the table would add a snapshot and a small file a second, so the
writer buffers the delivered ranges' rows and commits them together (`due()`): a few commits a
minute, each recording the shard's last sequence number in the same commit
(`appdata.lake.tables.append_stream`). The buffer is only a shortcut: when the table's mark is
behind the first buffered range (a consumer died with rows buffered, or the table is new), the
gap is read again from Kinesis, from the mark up to where the drain has delivered, and committed
with the buffer, so what the drain delivered reaches the table exactly once whatever crashed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa
from pyiceberg.table import Table

from appdata.lake import tables
from appdata.privacy.forgotten import ForgottenUsers
from appdata.stream.drain import DrainResult, decode_records, list_shards, read_shard, table_rows, without_forgotten

COMMIT_SECONDS = 30.0  # the table trails the drain by at most this (plus one commit), well inside 2 minutes
COMMIT_ROWS = 200_000  # or sooner, when this many rows wait (bounds the buffer of a shard far behind)


@dataclass
class TableCommit:
    """One commit of a shard's rows: what it appended, up to where, and what was read again."""

    shard_id: str
    last_sequence: str
    rows: int
    recovered_rows: int = 0  # of `rows`, read again from Kinesis (the gap before the buffer)
    seconds: float = 0.0


@dataclass
class StreamTableWriter:
    """Buffers one shard's delivered ranges and commits them to the table (see the module doc).

    `open_table` gives the table (called once, then refreshed by each commit); `delivered` the
    shard's checkpoint in the lease table (how far the drain has delivered)."""

    open_table: Callable[[], Table]
    kinesis: Any
    stream: str
    shard_id: str
    delivered: Callable[[], str | None]
    users: ForgottenUsers | None = None  # forgotten users: their records read again are dropped
    commit_seconds: float = COMMIT_SECONDS
    commit_rows: int = COMMIT_ROWS
    clock: Callable[[], float] = time.monotonic
    _ranges: list[DrainResult] = field(default_factory=list)
    _rows: int = 0
    _last_commit: float | None = None
    _table: Table | None = None

    def add(self, result: DrainResult) -> None:
        self._ranges.append(result)
        self._rows += result.table_rows.num_rows if result.table_rows is not None else 0

    def due(self) -> bool:
        """Time to commit: the buffer is old or big enough, or nothing was committed yet this run
        (the first commit also closes any gap an earlier consumer left)."""
        if self._last_commit is None:
            return True
        if not self._ranges:
            return False
        return self._rows >= self.commit_rows or self.clock() - self._last_commit >= self.commit_seconds

    def commit(self) -> TableCommit | None:
        """Commit the buffer (and any gap before it); None when the table already holds it all.
        On failure the buffer is dropped: the next commit reads the gap again from Kinesis."""
        started = self.clock()
        ranges, self._ranges, self._rows = self._ranges, [], 0
        self._last_commit = started
        table = self._open()
        mark = tables.stream_marks(table, self.stream).get(self.shard_id)
        upto = ranges[-1].last_sequence if ranges else self.delivered()
        if upto is None or (mark is not None and int(upto) <= int(mark)):
            return None
        first_buffered = next((r.first_sequence for r in ranges if mark is None or int(r.last_sequence) > int(mark)),
                              None)
        gap_end = upto if first_buffered is None else first_buffered
        recovered = self._read_gap(table, after=mark, before=gap_end, inclusive=first_buffered is None)
        parts = [recovered] + [r.table_rows for r in ranges if r.table_rows is not None and r.table_rows.num_rows]
        rows = pa.concat_tables(parts) if len(parts) > 1 else recovered
        appended = tables.append_stream(table, self.stream, [tables.StreamBatch(self.shard_id, upto, rows)])
        return TableCommit(self.shard_id, upto, appended, recovered_rows=recovered.num_rows,
                           seconds=round(self.clock() - started, 3))

    def _open(self) -> Table:
        if self._table is None:
            self._table = self.open_table()
        else:
            self._table.refresh()
        return self._table

    def _read_gap(self, table: Table, *, after: str | None, before: str, inclusive: bool) -> pa.Table:
        """Rows of the records after the table's mark up to `before` (exclusive, or inclusive
        when it is the drain's checkpoint), decoded as the drain decoded them; events the table
        already holds are left out."""
        if after is not None and int(before) - int(after) <= (0 if inclusive else 1):
            return tables.ARROW_SCHEMA.empty_table()
        read = read_shard(self.kinesis, self.stream, self.shard_id, after=after, until=before, max_records=10**9)
        records = [r for r in read.records if inclusive or r["SequenceNumber"] != before]
        if not records:
            return tables.ARROW_SCHEMA.empty_table()
        decoded = decode_records(records, shard_id=self.shard_id, stream=self.stream)
        valid = without_forgotten(decoded, self.users)[0] if self.users is not None else decoded.valid
        if valid.empty:
            return tables.ARROW_SCHEMA.empty_table()
        days = sorted(set(valid["download_date"]))
        held = tables.scan(table, source=tables.STREAM, days=days, columns=("event_id",)).column("event_id")
        held_ids = set(held.to_pylist())
        valid = valid.assign(_new=valid["_new"] & ~valid["event_id"].isin(held_ids))
        return table_rows(valid, self.shard_id)


def sync_stream_table(open_table: Callable[[], Table], kinesis: Any, stream: str, leases: Any,
                      users: ForgottenUsers | None) -> list[TableCommit]:
    """Bring the table up to what the drain has delivered on every shard, reading from Kinesis
    (what `appdata drain` and the demos do after draining without a long-lived consumer)."""
    table = open_table()
    commits = []
    for shard in list_shards(kinesis, stream):
        shard_id = shard["ShardId"]
        writer = StreamTableWriter(open_table=lambda: table, kinesis=kinesis, stream=stream, shard_id=shard_id,
                                   delivered=lambda shard_id=shard_id: leases.get(shard_id).checkpoint, users=users)
        committed = writer.commit()
        if committed is not None:
            commits.append(committed)
    return commits
