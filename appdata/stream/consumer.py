"""A long-lived shard consumer: keeps one shard drained until a deadline, then hands over.

Why: a Kinesis shard takes 1,000 records/s all day. Launching a run per range (the first
design) spent seconds per range on process start alone, and in production an ECS task per
range takes tens of seconds, so the drain fell behind. A consumer instead holds the shard's
lease (`leases.py`) and loops GetRecords -> `drain_records` -> checkpoint, so a range is in
every sink about a second after it arrived, and ranges grow by themselves when it is behind
(one GetRecords answer, up to 10,000 records, is one range).

Exactly-once effects: before writing a range, its bounds are recorded in the lease item; after
every sink holds it, the checkpoint moves past it. A consumer that dies in between leaves the
range pending, and the next owner drains exactly that range again first: same records, same
lake keys, same DynamoDB keys, same event ids (inserted once). A range that fails is retried
here with growing delays; after `RANGE_ATTEMPTS` the consumer raises and the run fails, and
the sensor asks for a new consumer later. KCL order: a child shard is not read until each of its
parents is delivered to its end.

A stream that lost records it had accepted (a local emulator restored from an older state) gives
their sequence numbers to the next records it accepts, so a saved checkpoint can be past its end
or name another record. Each consumer start checks that the checkpoint's record is still the one
delivered (its sequence number and arrival time, both in the lease); when it is not, it says so
as an error and moves the checkpoint back to the last record that arrived no later than the
delivered one, so the records accepted since are all drained: none is skipped.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import queue
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import sqlalchemy as sa
from botocore.exceptions import ClientError

from appdata.aws import Backoff, error_code
from appdata.stream.drain import (
    GET_RECORDS_LIMIT, DrainResult, _arrival, drain_range, drain_records, get_iterator, list_shards, parents_of,
    read_shard, shard_order,
)
from appdata.stream.leases import LeaseLost, LeaseTable, ShardLease

log = logging.getLogger(__name__)

LEASE_SECONDS = 20.0  # a consumer that stops renewing loses its shard after this
POLL_SECONDS = 0.5  # GetRecords interval when caught up (Kinesis allows 5 reads/s per shard)
MIN_RANGE_SECONDS = 1.0  # at most one range a second when caught up: fewer, bigger lake objects
RANGE_ATTEMPTS = 5


@dataclass
class Sinks:
    """Where ranges go; `warehouse()` opens the engine for one range (DuckDB's file lock is held
    only while a range is written, so batch loads and the dashboard get their turns)."""

    s3: Any
    bucket: str
    dynamodb: Any
    table: str
    warehouse: Callable[[], AbstractContextManager[sa.Engine | None]] = lambda: nullcontext(None)
    copy_iam_role: str | None = None


@dataclass
class ConsumeSummary:
    """What one consumer did with its shard."""

    shard_id: str
    ranges: int = 0
    records: int = 0
    rejected: int = 0
    shard_end: bool = False
    lease_taken: bool = True
    lease_lost: bool = False  # a successor took the shard over while this consumer stalled
    notes: list[str] = field(default_factory=list)


class LeaseRenewer:
    """Renews a held lease every third of its time from a thread of its own (as the KCL does), so
    a range that takes long to write never loses the shard; a consumer that dies stops renewing
    and its lease expires. `lost` is set when the lease is found in other hands."""

    def __init__(self, leases: LeaseTable, shard_id: str, owner: str):
        self.leases, self.shard_id, self.owner = leases, shard_id, owner
        self.lost: LeaseLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{shard_id}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            try:
                self.leases.renew(self.shard_id, self.owner, LEASE_SECONDS)
            except LeaseLost as exc:
                self.lost = exc
                return
            except Exception as exc:  # noqa: BLE001 - the lease store unreachable: try again; expiry decides
                log.warning("%s: lease not renewed (%r)", self.shard_id, exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=LEASE_SECONDS)


def stream_created(kinesis: Any, stream: str) -> str:
    """What makes this stream this stream: a re-created one has the same name, a new creation
    time and new sequence numbers, so checkpoints saved for the old one point nowhere."""
    summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    return summary["StreamCreationTimestamp"].isoformat()


class ShardConsumer:
    """Drains one shard while it holds the lease; `run()` returns at the deadline, at the end of
    a closed shard, or (with `stop_when_caught_up`) once nothing more is waiting."""

    def __init__(self, *, kinesis: Any, stream: str, shard_id: str, parents: Iterable[str], leases: LeaseTable,
                 owner: str, sinks: Sinks, created: str, on_range: Callable[[DrainResult], None] = lambda r: None,
                 on_note: Callable[[str, str], None] = lambda level, text: None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.kinesis, self.stream, self.shard_id = kinesis, stream, shard_id
        self.parents = list(parents)
        self.leases, self.owner, self.sinks, self.created = leases, owner, sinks, created
        self.on_range, self.on_note = on_range, on_note
        self.clock, self.sleep = clock, sleep
        self._renewer: LeaseRenewer | None = None

    def note(self, level: str, text: str, summary: ConsumeSummary) -> None:
        summary.notes.append(text)
        self.on_note(level, f"{self.shard_id}: {text}")

    # ------------------------------------------------------------------ lease
    def _take_lease(self, until: float, wait_seconds: float, summary: ConsumeSummary):
        """The lease, waiting up to `wait_seconds` for a predecessor to hand it over."""
        give_up = min(until, self.clock() + wait_seconds)
        while True:
            lease = self.leases.acquire(self.shard_id, self.owner, LEASE_SECONDS)
            if lease is not None:
                return lease
            if self.clock() >= give_up:
                summary.lease_taken = False
                self.note("info", "another consumer holds the lease; leaving the shard to it", summary)
                return None
            self.sleep(POLL_SECONDS)

    def _check_lease(self) -> None:
        if self._renewer is not None and self._renewer.lost is not None:
            raise self._renewer.lost

    def _parents_delivered(self) -> bool:
        return all(self.leases.get(parent).shard_end for parent in self.parents)

    # ------------------------------------------------------------------ ranges
    def _deliver(self, first: str, last: str, write: Callable[[sa.Engine | None], DrainResult],
                 summary: ConsumeSummary) -> DrainResult:
        """Write-ahead the range, write it (retried), checkpoint past it."""
        self._check_lease()
        self.leases.begin_range(self.shard_id, self.owner, first, last, LEASE_SECONDS)
        backoff = Backoff(base=1.0, cap=15.0, attempts=RANGE_ATTEMPTS, sleep=self.sleep)
        for attempt in range(1, RANGE_ATTEMPTS + 1):
            try:
                self._check_lease()
                with self.sinks.warehouse() as engine:
                    result = write(engine)
                break
            except LeaseLost:
                raise
            except Exception as exc:  # noqa: BLE001 - a sink (or the lease store) down: the whole range again
                if attempt == RANGE_ATTEMPTS:
                    raise
                self.note("warning", f"range {first}..{last} not delivered ({exc!r}); trying again (attempt "
                                     f"{attempt + 1} of {RANGE_ATTEMPTS})", summary)
                backoff.wait(attempt - 1)
        self._check_lease()
        arrival = result.newest_arrival.isoformat() if result.newest_arrival is not None else None
        self.leases.commit_range(self.shard_id, self.owner, last, arrival=arrival, shard_end=result.shard_end)
        summary.ranges += 1
        summary.records += result.records
        summary.rejected += result.rejected
        self.on_range(result)
        return result

    def _write_records(self, records: list[dict], shard_end: bool, behind: int | None):
        first, last = records[0]["SequenceNumber"], records[-1]["SequenceNumber"]

        def write(engine: sa.Engine | None) -> DrainResult:
            result = drain_records(records, stream=self.stream, shard_id=self.shard_id, first_sequence=first,
                                   last_sequence=last, s3=self.sinks.s3, bucket=self.sinks.bucket,
                                   dynamodb=self.sinks.dynamodb, table=self.sinks.table, engine=engine,
                                   copy_iam_role=self.sinks.copy_iam_role)
            result.shard_end, result.millis_behind_latest = shard_end, behind
            return result

        return first, last, write

    def _redo_pending(self, first: str, last: str) -> Callable[[sa.Engine | None], DrainResult]:
        def write(engine: sa.Engine | None) -> DrainResult:
            return drain_range(kinesis=self.kinesis, stream=self.stream, shard_id=self.shard_id, first_sequence=first,
                               last_sequence=last, s3=self.sinks.s3, bucket=self.sinks.bucket,
                               dynamodb=self.sinks.dynamodb, table=self.sinks.table, engine=engine,
                               copy_iam_role=self.sinks.copy_iam_role)
        return write

    def _iterator(self, checkpoint: str | None, summary: ConsumeSummary) -> str:
        if checkpoint is None:
            return get_iterator(self.kinesis, self.stream, self.shard_id)
        try:
            return get_iterator(self.kinesis, self.stream, self.shard_id, after=checkpoint)
        except ClientError as exc:
            if error_code(exc) != "InvalidArgumentException":
                raise
            self.note("error", f"checkpoint {checkpoint} is not in the shard ({exc}); reading it again from its "
                               "oldest record", summary)
            return get_iterator(self.kinesis, self.stream, self.shard_id)

    # ------------------------------------------------------------------ a stream that lost records
    def _record_at(self, sequence: str) -> dict | None:
        """The shard's record at `sequence`, or None past its end."""
        records = read_shard(self.kinesis, self.stream, self.shard_id, at=sequence, max_records=1).records
        return records[0] if records and records[0]["SequenceNumber"] == sequence else None

    def _last_delivered(self, arrival: str | None) -> dict | None:
        """The last record, from the shard's oldest, that arrived no later than `arrival` (None:
        unknown, so none): those before it were delivered, every later one arrived after the last
        delivered record, hence was not."""
        delivered_until = dt.datetime.fromisoformat(arrival) if arrival else None
        last, after = None, None
        while delivered_until is not None:
            read = read_shard(self.kinesis, self.stream, self.shard_id, after=after)
            for record in read.records:
                if _arrival(record) > delivered_until:
                    return last
                last = record
            if not read.records or read.caught_up or read.shard_end:
                break
            after = read.records[-1]["SequenceNumber"]
        return last

    def _still_on_the_stream(self, lease: ShardLease, summary: ConsumeSummary) -> ShardLease:
        """The lease, its checkpoint moved back when the stream no longer holds the records it
        names (see the module doc), and its pending range dropped when past the stream's end. A
        checkpoint past the stream's retention is left to `_iterator`, which says so."""
        try:
            return self._checked(lease, summary)
        except ClientError as exc:
            if error_code(exc) != "InvalidArgumentException":
                raise
            return lease

    def _checked(self, lease: ShardLease, summary: ConsumeSummary) -> ShardLease:
        if lease.checkpoint is not None:
            record = self._record_at(lease.checkpoint)
            held = record is not None and (lease.checkpoint_arrival is None or
                                           _arrival(record) <= dt.datetime.fromisoformat(lease.checkpoint_arrival))
            if not held:
                last = self._last_delivered(lease.checkpoint_arrival)
                resume = last["SequenceNumber"] if last is not None else None
                self.note("error", f"checkpoint {lease.checkpoint} (a record that arrived at "
                                   f"{lease.checkpoint_arrival or 'an unrecorded time'}) is "
                                   f"{'past the end of the shard' if record is None else 'another record now'}: the "
                                   "stream lost records it had accepted (an emulator restored from an older state); "
                                   "draining every record that arrived after it, from "
                                   f"{f'after {resume}' if resume else 'the oldest record'}", summary)
                self.leases.rewind(self.shard_id, self.owner, resume,
                                   _arrival(last).isoformat() if last is not None else None)
                return self.leases.get(self.shard_id)
        if lease.pending is not None and self._record_at(lease.pending[1]) is None:
            self.note("error", f"range {lease.pending[0]}..{lease.pending[1]} left pending is past the end of the "
                               "shard: the stream lost records it had accepted; draining from the checkpoint "
                               f"({lease.checkpoint or 'the oldest record'}) instead", summary)
            self.leases.rewind(self.shard_id, self.owner, lease.checkpoint, lease.checkpoint_arrival)
            return self.leases.get(self.shard_id)
        return lease

    # ------------------------------------------------------------------ loop
    def run(self, *, until: float = math.inf, stop_when_caught_up: bool = False,
            wait_for_lease_seconds: float = 0.0) -> ConsumeSummary:
        summary = ConsumeSummary(self.shard_id)
        lease = self._take_lease(until, wait_for_lease_seconds, summary)
        if lease is None:
            return summary
        self._renewer = LeaseRenewer(self.leases, self.shard_id, self.owner)
        try:
            if lease.stream_created != self.created:
                if lease.checkpoint or lease.pending:
                    self.note("error", f"the checkpoint belongs to another incarnation of stream {self.stream} "
                                       f"(created {lease.stream_created}, now {self.created}): it was re-created or "
                                       "the emulator lost its state; reading the new one from its start", summary)
                self.leases.reset(self.shard_id, self.owner, self.created)
                lease = self.leases.get(self.shard_id)
            if lease.shard_end:
                summary.shard_end = True
                return summary
            if not self._parents_delivered():
                self.note("info", "a parent shard is not delivered to its end yet; not reading (KCL order)", summary)
                return summary
            lease = self._still_on_the_stream(lease, summary)
            checkpoint = lease.checkpoint
            if lease.pending is not None:
                first, last = lease.pending
                self.note("warning", f"range {first}..{last} was left pending by an earlier consumer; draining it "
                                     "again first", summary)
                self._deliver(first, last, self._redo_pending(first, last), summary)
                checkpoint = last
            self._consume(self._iterator(checkpoint, summary), checkpoint, until, stop_when_caught_up, summary)
            return summary
        except LeaseLost as exc:
            # It stalled past its lease (a pause, a slow sink) and a successor took the shard; what it
            # was writing is the successor's pending range. Nothing is lost: stop, it is not an error.
            summary.lease_lost = True
            self.note("warning", f"{exc}; leaving the shard to its new owner", summary)
            return summary
        finally:
            self._renewer.stop()
            try:
                self.leases.release(self.shard_id, self.owner)
            except Exception as exc:  # noqa: BLE001 - never hide why the consumer stopped
                self.note("warning", f"lease not handed over ({exc!r}); it expires by itself within "
                                     f"{LEASE_SECONDS:.0f}s", summary)

    def _consume(self, iterator: str | None, checkpoint: str | None, until: float, stop_when_caught_up: bool,
                 summary: ConsumeSummary) -> None:
        last_range_at = 0.0
        empty_answers = 0
        while iterator is not None and self.clock() < until:
            self._check_lease()
            try:
                response = self.kinesis.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
            except ClientError as exc:
                if error_code(exc) != "ExpiredIteratorException":
                    raise
                iterator = self._iterator(checkpoint, summary)
                continue
            records = response.get("Records", [])
            iterator = response.get("NextShardIterator")
            behind = response.get("MillisBehindLatest")
            if records:
                empty_answers = 0
                last_range_at = self.clock()
                first, last, write = self._write_records(records, iterator is None, behind)
                self._deliver(first, last, write, summary)
                checkpoint = last
            elif iterator is None:
                self.leases.mark_shard_end(self.shard_id, self.owner)
            else:
                empty_answers += 1
            if iterator is None:
                summary.shard_end = True
                self.note("info", "closed and delivered to its end; its children may start", summary)
                return
            if behind and (records or empty_answers < 3):
                continue  # behind the tip (or in a sparse stretch of the shard): read on at once
            if not records and stop_when_caught_up:
                return
            if records and stop_when_caught_up:
                continue  # stop at the first empty answer, not before
            pause = max(0.0, MIN_RANGE_SECONDS - (self.clock() - last_range_at)) if records else POLL_SECONDS
            self.sleep(min(pause, max(0.0, until - self.clock())))


@dataclass
class CatchUp:
    """What `drain_until_caught_up` delivered, and the shards it left to another consumer."""

    results: list[DrainResult]
    held_elsewhere: list[str]


def drain_until_caught_up(*, kinesis: Any, stream: str, leases: LeaseTable, sinks: Sinks, owner: str,
                          on_range: Callable[[DrainResult], None] = lambda result: None,
                          on_note: Callable[[str, str], None] = lambda level, text: None) -> CatchUp:
    """Drain every shard (parents first) up to now, as a consumer that stops once caught up: what
    the CLI, the demos and the benchmarks run without a daemon. A shard whose lease another
    consumer holds (a running `stream_drain_job`) is left to it, and named."""
    outcome = CatchUp([], [])

    def collect(result: DrainResult) -> None:
        outcome.results.append(result)
        on_range(result)

    created = stream_created(kinesis, stream)
    for shard in shard_order(list_shards(kinesis, stream)):
        summary = ShardConsumer(kinesis=kinesis, stream=stream, shard_id=shard["ShardId"],
                                parents=parents_of(shard), leases=leases, owner=owner, sinks=sinks, created=created,
                                on_range=collect, on_note=on_note).run(stop_when_caught_up=True)
        if not summary.lease_taken:
            outcome.held_elsewhere.append(shard["ShardId"])
    return outcome


class FollowUp:
    """Work that follows the drain off its critical path (the touched users' recommendations):
    a background thread takes every user id queued since its last pass and calls `work` once for
    all of them; `close()` finishes what is queued. A failure is reported, never raised into the
    drain: the drained data is safe, and the next pass or the full refresh catches up."""

    def __init__(self, work: Callable[[list[int]], Any], on_done: Callable[[list[int], Any, float], None],
                 on_error: Callable[[list[int], BaseException], None]):
        self.work, self.on_done, self.on_error = work, on_done, on_error
        self._queue: queue.Queue[set[int] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="drain-follow-up", daemon=True)
        self._thread.start()

    def add(self, users: Iterable[int]) -> None:
        users = set(users)
        if users:
            self._queue.put(users)

    def _loop(self) -> None:
        closing = False
        while not closing:
            batch = self._queue.get()
            users: set[int] = set()
            while True:
                if batch is None:
                    closing = True
                else:
                    users |= batch
                try:
                    batch = self._queue.get_nowait()
                except queue.Empty:
                    break
            if users:
                ordered = sorted(users)
                started = time.monotonic()
                try:
                    outcome = self.work(ordered)
                except Exception as exc:  # noqa: BLE001 - reported by on_error, see the class doc
                    self.on_error(ordered, exc)
                else:
                    self.on_done(ordered, outcome, time.monotonic() - started)

    def close(self, timeout: float | None = None) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
