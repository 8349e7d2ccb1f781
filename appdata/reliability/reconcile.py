"""Reconciliation: for one day, which event ids each sink is missing, has in excess or twice.

Counts can agree while the events differ (one lost, another doubled), so every comparison is by
event id. Stream: what was accepted (the Kinesis stream itself within retention, decoded as the
drain decodes it; or the ids the API returned, when a caller kept them) = distinct events in the
lake = DynamoDB download items = `downloads_stream`, so an event missing from every sink is
named. Batch: the day's landing rows = curated rows + rejected rows, and curated =
`downloads_batch`. The same functions serve the Dagster asset checks, `appdata reconcile`,
`appdata demo` and the reliability tests.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd
import sqlalchemy as sa

from appdata import aws
from appdata.contract import deadletters, layout, schema
from appdata.privacy.forgotten import ForgottenUsers

SHOWN_IDS = 20  # ids named in a description; metadata carries up to MAX_IDS
MAX_IDS = 1000
# A record is due in every sink this long after Kinesis accepted it (see `read_stream_reference`).
STREAM_GRACE_SECONDS = 300.0


@dataclass
class SinkDiff:
    """One sink compared with its reference set of event ids."""

    sink: str
    reference: str
    count: int
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.duplicated)

    def describe(self) -> str:
        if self.ok:
            return f"{self.sink}: {self.count} events = {self.reference}"
        parts = []
        for label, ids in (("missing", self.missing), ("extra", self.extra), ("duplicated", self.duplicated)):
            if ids:
                shown = ", ".join(ids[:SHOWN_IDS]) + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")
                parts.append(f"{len(ids)} {label} vs {self.reference}: {shown}")
        return f"{self.sink}: " + "; ".join(parts)


@dataclass
class DayReconciliation:
    pipeline: str  # "stream" or "batch"
    day: str
    counts: dict[str, int]
    diffs: list[SinkDiff]
    # stream against the source: accepted event id -> "<shard>/<sequence>" of its record, for the
    # events in no sink at all (also named missing in each sink's diff)
    lost: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.diffs)

    @property
    def failing(self) -> list[SinkDiff]:
        return [d for d in self.diffs if not d.ok]

    def describe(self) -> str:
        head = f"{self.pipeline} {self.day}: " + ", ".join(f"{k} {v}" for k, v in self.counts.items())
        if self.ok:
            return head + ": reconciled"
        parts = []
        if self.lost:
            ids = sorted(self.lost)
            shown = ", ".join(f"{i} (at {self.lost[i]})" for i in ids[:SHOWN_IDS])
            more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
            parts.append(f"{len(ids)} accepted on the stream and in NO sink: {shown}{more}")
        return head + ": NOT reconciled: " + " | ".join(parts + [d.describe() for d in self.failing])

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "day": self.day,
            "ok": self.ok,
            "counts": self.counts,
            "lost": {i: self.lost[i] for i in sorted(self.lost)[:MAX_IDS]},
            "sinks": {
                d.sink: {"reference": d.reference, "count": d.count, "missing": d.missing[:MAX_IDS],
                         "extra": d.extra[:MAX_IDS], "duplicated": d.duplicated[:MAX_IDS]}
                for d in self.diffs
            },
        }


def compare(sink: str, reference_name: str, reference: set[str], found: Counter) -> SinkDiff:
    ids = set(found)
    return SinkDiff(
        sink=sink,
        reference=reference_name,
        count=len(ids),
        missing=sorted(reference - ids),
        extra=sorted(ids - reference),
        duplicated=sorted(i for i, n in found.items() if n > 1),
    )


# ----------------------------------------------------------------- readers (one per sink)


def _body(s3: Any, bucket: str, key: str) -> bytes:
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def lake_event_ids(s3: Any, bucket: str, day: str) -> Counter:
    """event_id -> copies in the lake objects of `day` (replays rewrite, so copies stay 1 per range)."""
    found: Counter = Counter()
    for key in aws.list_keys(s3, bucket, layout.partition(layout.LAKE, day)):
        for line in _body(s3, bucket, key).decode("utf-8").splitlines():
            if line.strip():
                found[json.loads(line)["event_id"]] += 1
    return found


def dynamodb_event_ids(dynamodb: Any, table: str, day: str) -> Counter:
    """event_id -> items among the day's download items (sk DL#<day>#<event_id>)."""
    prefix = f"DL#{day}#"
    return Counter(item["sk"]["S"][len(prefix):] for item in _download_keys(dynamodb, table, prefix))


def dynamodb_event_ids_by_day(dynamodb: Any, table: str) -> dict[str, Counter]:
    """One scan of every download item, grouped by day (cheaper than a scan per day)."""
    by_day: dict[str, Counter] = {}
    for item in _download_keys(dynamodb, table, "DL#"):
        _, day, event_id = item["sk"]["S"].split("#", 2)
        by_day.setdefault(day, Counter())[event_id] += 1
    return by_day


def _download_keys(dynamodb: Any, table: str, sk_prefix: str) -> Iterable[dict]:
    """The sort keys of the download items whose sk starts with `sk_prefix` (one Scan, paged)."""
    return aws.scan_items(dynamodb, table, FilterExpression="begins_with(sk, :p)",
                          ExpressionAttributeValues={":p": {"S": sk_prefix}}, ProjectionExpression="sk")


def partition_days_under(s3: Any, bucket: str, prefix: str) -> set[str]:
    """Days that have objects under <prefix>download_date=YYYY-MM-DD/."""
    return {folder.rstrip("/").split("download_date=", 1)[1]
            for folder in aws.list_prefixes(s3, bucket, f"{prefix}download_date=")}


def warehouse_days(engine: sa.Engine, table: str) -> set[str]:
    sql = sa.text(f'SELECT DISTINCT download_date FROM "{table}"')
    with engine.connect() as conn:
        return {str(r[0])[:10] for r in conn.execute(sql).fetchall()}


def warehouse_event_ids(engine: sa.Engine, table: str, day: str) -> Counter:
    """event_id -> rows of `table` for the day (more than 1 is a duplicate)."""
    sql = sa.text(f'SELECT event_id, COUNT(*) FROM "{table}" WHERE download_date = :day GROUP BY event_id')
    import datetime as dt

    with engine.connect() as conn:
        rows = conn.execute(sql, {"day": dt.date.fromisoformat(day)}).fetchall()
    return Counter({str(r[0]): int(r[1]) for r in rows})


def _record_id(record: dict[str, Any]) -> str:
    value = record.get("event_id")
    if schema._is_null(value):
        return schema.derive_event_id(record)
    return str(value).strip()


def landing_csv_records(data: bytes) -> list[dict[str, Any]]:
    """Every data row of a landing CSV (or .csv.gz) as a {header name: value} dict, split by the
    ETL's own reader (`appdata.batch.etl.landing_records`), so both see the same rows: rows of
    the wrong width, unterminated quotes, over-long rows and bytes that are not UTF-8 count as
    rows too, since the ETL must account for each of them (curated or rejected). A file without
    any line has no rows.
    """
    from appdata.batch.etl import landing_records

    return landing_records(data)


def _landing_object(s3: Any, bucket: str, key: str) -> bytes:
    """A landing object as stored (gzip is `landing_csv_records`' to undo, damaged or not)."""
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def rejected_event_ids_by_landing_day(s3: Any, bucket: str, *, replayed: bool = False) -> dict[str, Counter]:
    """Batch dead letters grouped by the landing day they came from (one listing for all days).

    A dead letter is filed under its record's download_date when that parses, which may not be
    the landing file's day; its `landing_day` says where it came from (else the folder's day).
    """
    by_day: dict[str, Counter] = {}
    for key in aws.list_keys(s3, bucket, layout.rejected_prefix("batch", replayed=replayed)):
        if key.endswith(".jsonl") and "/download_date=" in key:
            for letter in deadletters.parse(key, _body(s3, bucket, key)):
                day = str(letter.context.get("landing_day") or letter.date)
                by_day.setdefault(day, Counter())[_record_id(letter.record)] += 1
    return by_day


# ----------------------------------------------------------------- reconciliations


def _without(found: Counter, ids: set[str]) -> Counter:
    return Counter({i: n for i, n in found.items() if i not in ids}) if ids else found


def _stream_day(
    day: str, lake: Counter, items: Counter, rows: Counter, *, accepted: Iterable[str] | None = None,
    reference: "StreamReference | None" = None,
) -> DayReconciliation:
    """One stream day from what each sink holds, against the stream, the API's ids or the sinks."""
    lost: dict[str, str] = {}
    dead_letters: list[SinkDiff] = []
    if reference is not None:
        on_stream = reference.accepted.get(day, {})
        young = reference.in_flight.get(day, set()) - set(on_stream)  # judged once they are due
        lake, items, rows = _without(lake, young), _without(items, young), _without(rows, young)
        # Events in a sink and not (any more) on the stream, past retention, are held to the
        # other sinks as before: the reference is the stream plus whatever any sink holds.
        ids, name = set(on_stream) | set(lake) | set(items) | set(rows), "accepted"
        counts = {"accepted": len(on_stream)}
        lost = {i: on_stream[i] for i in on_stream if i not in lake and i not in items and i not in rows}
        rejected = reference.rejected.get(day, {})
        if rejected:
            dead_letters.append(compare("dead letters", "rejected by the drain", set(rejected),
                                        Counter({pos: 1 for pos, held in rejected.items() if held})))
    elif accepted is not None:
        ids, name = set(accepted), "accepted by the API"
        counts = {"accepted": len(ids)}
    else:
        ids, name = set(lake) | set(items) | set(rows), "any stream sink"
        counts = {}
    counts.update({"lake": len(lake), "dynamodb": len(items), "downloads_stream": sum(rows.values())})
    if reference is not None:
        if young:
            counts["in_flight"] = len(young)
        if dead_letters:
            counts["rejected"] = len(reference.rejected[day])
    lake_diff = compare("lake", name, ids, Counter(set(lake)))  # the lake keeps distinct events
    return DayReconciliation("stream", day, counts, [
        lake_diff,
        compare("dynamodb", name, ids, items),
        compare("downloads_stream", name, ids, rows),
        *dead_letters,
    ], lost=lost)


def reconcile_stream_day(
    *, s3: Any, bucket: str, dynamodb: Any, table: str, engine: sa.Engine, day: str,
    accepted: Iterable[str] | None = None, dynamodb_ids: Counter | None = None,
    reference: "StreamReference | None" = None,
) -> DayReconciliation:
    """Lake = DynamoDB = downloads_stream (= the stream's accepted events, or the API's accepted
    ids, when given) for `day`.

    Without a reference the reference is the union of the three sinks, so an event present
    anywhere and absent from one sink is named as missing there, and one absent from all is not
    seen: `reconcile_stream(kinesis=...)` (what the check and `appdata reconcile` run) reads the
    stream for that.
    """
    lake = lake_event_ids(s3, bucket, day)
    items = dynamodb_ids if dynamodb_ids is not None else dynamodb_event_ids(dynamodb, table, day)
    rows = warehouse_event_ids(engine, "downloads_stream", day)
    return _stream_day(day, lake, items, rows, accepted=accepted, reference=reference)


def reconcile_stream(
    *, s3: Any, bucket: str, dynamodb: Any, table: str, engine: sa.Engine, days: Iterable[str] | None = None,
    kinesis: Any = None, stream: str | None = None, now: float | None = None,
    grace_seconds: float = STREAM_GRACE_SECONDS,
) -> list[DayReconciliation]:
    """Every day the stream or any stream sink holds (or the given days).

    With `kinesis` and `stream`, the reference is the stream itself (see
    `reconcile_stream_against_source`); without, the sinks are compared with one another only.
    """
    if kinesis is not None:
        if not stream:
            raise ValueError("reconcile_stream(kinesis=...) needs the stream's name")
        results, _ = reconcile_stream_against_source(
            s3=s3, bucket=bucket, dynamodb=dynamodb, table=table, engine=engine, kinesis=kinesis, stream=stream,
            days=days, now=now, grace_seconds=grace_seconds)
        return results
    by_day = dynamodb_event_ids_by_day(dynamodb, table)
    if days is None:
        days = partition_days_under(s3, bucket, layout.LAKE) | set(by_day) | warehouse_days(engine, "downloads_stream")
    return [
        reconcile_stream_day(s3=s3, bucket=bucket, dynamodb=dynamodb, table=table, engine=engine, day=day,
                             dynamodb_ids=by_day.get(day, Counter()))
        for day in sorted(days)
    ]


# ----------------------------------------------------------------- the stream as the reference


def _position(shard_id: str, sequence: str) -> str:
    return f"{shard_id}/{sequence}"


def _arrival_epoch(record: dict) -> float | None:
    stamp = record.get("ApproximateArrivalTimestamp")
    if isinstance(stamp, dt.datetime):
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)).timestamp()
    if isinstance(stamp, (int, float)):
        return float(stamp)
    return None


def stream_dead_letter_positions(s3: Any, bucket: str) -> set[str]:
    """"<shard>/<sequence>" of every stream record the drain dead-lettered (waiting or replayed)."""
    found: set[str] = set()
    for replayed in (False, True):
        for key in aws.list_keys(s3, bucket, layout.rejected_prefix("stream", replayed=replayed)):
            if key.endswith(".jsonl"):
                for letter in deadletters.parse(key, _body(s3, bucket, key)):
                    shard, sequence = letter.context.get("shard_id"), letter.context.get("sequence_number")
                    if shard and sequence:
                        found.add(_position(str(shard), str(sequence)))
    return found


def _is_day(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
        return True
    except ValueError:
        return False


def _valid_rows(valid: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(event_id, day, sequence number) of each event the drain's decoding accepted."""
    if valid.empty:
        return []
    days = valid["download_date"].map(lambda d: str(d)[:10])
    return list(zip(valid["event_id"].map(str), days, valid["_seq"].map(str)))


@dataclass
class StreamReference:
    """What Kinesis accepted, decoded as the drain decodes it: the stream reconciliation's reference.

    accepted: day -> event id -> "<shard>/<sequence>" of its first record that the drain accepts
    (and did not dead-letter later, e.g. a sink refusing it), among records that arrived at or
    before `cutoff`. in_flight: day -> event ids seen in younger records (not judged yet).
    rejected: day -> "<shard>/<sequence>" of each due record the drain's decoding rejects ->
    whether a dead letter under rejected/stream/ (or rejected/_replayed/stream/) holds it.
    """

    stream: str
    now: float
    grace_seconds: float
    accepted: dict[str, dict[str, str]] = field(default_factory=dict)
    in_flight: dict[str, set[str]] = field(default_factory=dict)
    rejected: dict[str, dict[str, bool]] = field(default_factory=dict)
    dead_lettered: int = 0  # decoded fine, then dead-lettered by the drain all the same
    shards: dict[str, dict[str, Any]] = field(default_factory=dict)  # shard -> records, first, last, in_flight
    letters: set[str] = field(default_factory=set, repr=False)
    forgotten: Any = field(default=None, repr=False)  # users asked to be forgotten: in no sink by design

    @property
    def cutoff(self) -> float:
        return self.now - self.grace_seconds

    @property
    def days(self) -> set[str]:
        return set(self.accepted) | set(self.in_flight) | set(self.rejected)

    def summary(self) -> dict[str, Any]:
        return {
            "stream": self.stream, "grace_seconds": self.grace_seconds,
            "cutoff": dt.datetime.fromtimestamp(self.cutoff, dt.timezone.utc).isoformat(),
            "records": sum(s["records"] for s in self.shards.values()),
            "in_flight_records": sum(s["in_flight"] for s in self.shards.values()),
            "accepted_events": sum(len(v) for v in self.accepted.values()),
            "rejected_records": sum(len(v) for v in self.rejected.values()),
            "dead_lettered_after_decoding": self.dead_lettered,
            "shards": self.shards,
        }

    def describe(self) -> str:
        s = self.summary()
        return (f"stream {self.stream}: {s['records']:,} record(s) in {len(self.shards)} shard(s) from "
                f"TRIM_HORIZON; {s['accepted_events']:,} accepted event(s) due in every sink, "
                f"{s['rejected_records']:,} record(s) rejected by the drain, {s['in_flight_records']:,} younger "
                f"than {self.grace_seconds:.0f} s (in flight, not judged)")

    def add(self, shard_id: str, records: list[dict], *, in_flight: bool = False) -> None:
        """Decode one shard's records with the drain's own decoder and file them."""
        stats = self.shards.setdefault(shard_id, {"records": 0, "first": None, "last": None, "in_flight": 0})
        if not records:
            return
        stats["records"] += len(records)
        stats["first"] = stats["first"] or records[0]["SequenceNumber"]
        stats["last"] = records[-1]["SequenceNumber"]
        due: list[dict] = []
        young: list[dict] = []
        for record in records:
            arrived = _arrival_epoch(record)
            (young if in_flight or (arrived is not None and arrived > self.cutoff) else due).append(record)
        stats["in_flight"] += len(young)
        if due:
            decoded = self._decode(due, shard_id)
            for event_id, day, sequence in _valid_rows(decoded.valid):
                position = _position(shard_id, sequence)
                if position in self.letters:
                    self.dead_lettered += 1
                    continue
                self.accepted.setdefault(day, {}).setdefault(event_id, position)
            for line in decoded.rejected:
                position = _position(shard_id, str(line.get("sequence_number")))
                self.rejected.setdefault(deadletters.filing_day(line["record"], line["approximate_arrival"][:10]), {})[position] = position in self.letters
        if young:
            decoded = self._decode(young, shard_id)
            for event_id, day, _ in _valid_rows(decoded.valid):
                self.in_flight.setdefault(day, set()).add(event_id)

    def _decode(self, records: list[dict], shard_id: str):
        """The drain's decoding, then its dropping of forgotten users' records (kept nowhere)."""
        from appdata.stream.drain import Decoded, decode_records, without_forgotten

        decoded = decode_records(records, shard_id=shard_id, stream=self.stream)
        if self.forgotten is None:
            return decoded
        valid, rejected, _ = without_forgotten(decoded, self.forgotten)
        return Decoded(valid=valid, rejected=rejected)


def _read_shard_chunks(kinesis: Any, stream: str, shard_id: str, after: str | None, chunk: int):
    """The drain's own reader over one shard, from `after` (else TRIM_HORIZON) to now, in chunks."""
    from appdata.stream.drain import read_shard

    while True:
        read = read_shard(kinesis, stream, shard_id, after=after, max_records=chunk)
        if read.records:
            yield read.records
            after = read.records[-1]["SequenceNumber"]
        if not read.records or read.shard_end or read.caught_up:
            return


def read_stream_reference(
    kinesis: Any, stream: str, *, s3: Any, bucket: str, now: float | None = None,
    grace_seconds: float = STREAM_GRACE_SECONDS, chunk: int = 10_000,
) -> StreamReference:
    """Every shard read from TRIM_HORIZON with the drain's reader (`read_shard`, parents first),
    decoded with the drain's decoder (`decode_records`): exactly the records the drain accepts.

    In flight: only records that arrived (ApproximateArrivalTimestamp) `grace_seconds` or more
    before `now` are due; younger ones are noted, not judged. Chosen over "up to each shard's
    drained position" because that position (the lease table's checkpoint) is the drain's own
    claim and stops moving when the drain is stopped or stuck, so a reference bounded by it
    would stay green over exactly the losses a stalled drain causes.

    The stream holds every event the API accepted, so it needs no acceptance log beside it: the API
    answers 200 only for records PutRecords accepted, Kinesis keeps an accepted record for its
    retention (replicated before it answers), and the local emulator appends and fsyncs each put to
    its write-ahead log before answering, replayed on every start (`appdata.local.emulator`), so
    a crash loses no answered put there either. The arrival time is on every
    record and needs no other state; the consumers deliver a range within seconds, so an event in
    no sink 5 minutes after Kinesis took it is late or lost, and red is the right answer either way. Tests pass
    `now` (or a grace of 0), so the result does not depend on the clock.
    """
    from appdata.stream.drain import list_shards, shard_order

    reference = StreamReference(stream, time.time() if now is None else now, grace_seconds)
    reference.letters = stream_dead_letter_positions(s3, bucket)
    reference.forgotten = ForgottenUsers(s3, bucket)
    for shard in shard_order(list_shards(kinesis, stream)):
        shard_id = shard["ShardId"]
        reference.add(shard_id, [])
        for records in _read_shard_chunks(kinesis, stream, shard_id, None, chunk):
            reference.add(shard_id, records)
    return reference


def read_stream_tail(reference: StreamReference, kinesis: Any, *, chunk: int = 10_000) -> None:
    """Records that arrived after `reference` was read (while the sinks were read): in flight,
    so a range being drained meanwhile, in some sinks and not yet in others, is not judged."""
    from appdata.stream.drain import list_shards

    for shard in list_shards(kinesis, reference.stream):
        shard_id = shard["ShardId"]
        last = reference.shards.get(shard_id, {}).get("last")
        for records in _read_shard_chunks(kinesis, reference.stream, shard_id, last, chunk):
            reference.add(shard_id, records, in_flight=True)


def reconcile_stream_against_source(
    *, s3: Any, bucket: str, dynamodb: Any, table: str, engine: sa.Engine, kinesis: Any, stream: str,
    days: Iterable[str] | None = None, first: str | None = None, last: str | None = None,
    now: float | None = None, grace_seconds: float = STREAM_GRACE_SECONDS,
) -> tuple[list[DayReconciliation], StreamReference]:
    """Per day, every event the stream accepted (as the drain decodes it, arrived over
    `grace_seconds` before `now`) must be in the lake, DynamoDB and `downloads_stream` exactly
    once; one in no sink is named with its shard and sequence number. Each record the drain's
    decoding rejects must have a dead letter. Events in a sink but no longer on the stream
    (past retention) are compared among the sinks. Days: `days`, else every day the stream or
    a sink holds, within `first`..`last` when given.
    """
    reference = read_stream_reference(kinesis, stream, s3=s3, bucket=bucket, now=now, grace_seconds=grace_seconds)
    by_day = dynamodb_event_ids_by_day(dynamodb, table)
    if days is None:
        days = (reference.days | partition_days_under(s3, bucket, layout.LAKE) | set(by_day)
                | warehouse_days(engine, "downloads_stream"))
    days = sorted(d for d in days if (first is None or d >= first) and (last is None or d <= last))
    if not days:
        return [], reference
    dated = [d for d in days if _is_day(d)]
    rows_by_day = warehouse_event_ids_by_day(engine, "downloads_stream", dated[0], dated[-1]) if dated else {}
    lakes = {day: lake_event_ids(s3, bucket, day) for day in days}
    read_stream_tail(reference, kinesis)  # after every sink is read
    results = [_stream_day(day, lakes[day], by_day.get(day, Counter()), rows_by_day.get(day, Counter()),
                           reference=reference) for day in days]
    return results, reference


def batch_rejected_by_landing_day(s3: Any, bucket: str) -> dict[str, Counter]:
    """Dead letters still waiting plus those already replayed (moved to rejected/_replayed/).

    A replayed row stays in the client's landing file, so it stays accounted for as rejected;
    when the day is re-run its dead letter is written again, hence max() and not a sum.
    """
    waiting = rejected_event_ids_by_landing_day(s3, bucket)
    replayed = rejected_event_ids_by_landing_day(s3, bucket, replayed=True)
    for day, ids in replayed.items():
        merged = waiting.setdefault(day, Counter())
        for event_id, n in ids.items():
            merged[event_id] = max(merged[event_id], n)
    return waiting


def batch_days(s3: Any, bucket: str, engine: sa.Engine) -> set[str]:
    return partition_days_under(s3, bucket, layout.LANDING) | warehouse_days(engine, "downloads_batch")


def _batch_day(day: str, landing: Counter, curated: Counter, rejected: Counter, rows: Counter) -> DayReconciliation:
    etl_out = curated + rejected
    counts = {
        "landing": sum(landing.values()),
        "curated": sum(curated.values()),
        "rejected": sum(rejected.values()),
        "downloads_batch": sum(rows.values()),
    }
    etl = compare("curated+rejected", "landing", set(landing), etl_out)
    # A landing row repeated by the client is the client's duplicate, not the ETL's.
    etl.duplicated = sorted(i for i in etl.duplicated if etl_out[i] > landing.get(i, 0))
    return DayReconciliation("batch", day, counts, [
        etl,
        compare("downloads_batch", "curated", set(curated), rows),
    ])


def _keys_by_day(s3: Any, bucket: str, prefix: str, first: str, last: str,
                 suffix: str | tuple[str, ...]) -> dict[str, list[str]]:
    """Keys ending in `suffix` under <prefix>download_date=D/ for first <= D <= last: one listing."""
    found: dict[str, list[str]] = {}
    start = f"{prefix}download_date="
    for key in aws.list_keys(s3, bucket, start, start_after=f"{start}{first}"):
        day = key[len(start):].split("/", 1)[0]
        if day > last:
            return found
        if day >= first and key.endswith(suffix):
            found.setdefault(day, []).append(key)
    return found


def warehouse_event_ids_by_day(engine: sa.Engine, table: str, first: str, last: str) -> dict[str, Counter]:
    """event_id -> rows of `table` per day for first <= day <= last, in one query."""
    import datetime as dt

    sql = sa.text(f'SELECT download_date, event_id, COUNT(*) FROM "{table}" '
                  "WHERE download_date >= :first AND download_date <= :last GROUP BY download_date, event_id")
    by_day: dict[str, Counter] = {}
    with engine.connect() as conn:
        result = conn.execute(sql, {"first": dt.date.fromisoformat(first), "last": dt.date.fromisoformat(last)})
        for day, event_id, n in result:
            by_day.setdefault(str(day)[:10], Counter())[str(event_id)] = int(n)
    return by_day


def reconcile_batch(
    *, s3: Any, bucket: str, engine: sa.Engine, days: Iterable[str] | None = None,
) -> list[DayReconciliation]:
    """The given days (default: every day with landing data or warehouse rows).

    Landing rows = curated + rejected rows, and curated = downloads_batch, by event id, read in bulk for a window (a year's backfill checks
    366 days): one listing per prefix, one warehouse query, object bodies fetched on a few threads.
    """
    from concurrent.futures import ThreadPoolExecutor

    rejected_by_day = batch_rejected_by_landing_day(s3, bucket)
    if days is None:
        days = batch_days(s3, bucket, engine)
    days = sorted(days)
    if not days:
        return []
    first, last = days[0], days[-1]
    landing_keys = _keys_by_day(s3, bucket, layout.LANDING, first, last, layout.LANDING_SUFFIXES)
    curated_keys = _keys_by_day(s3, bucket, layout.CURATED, first, last, ".parquet")
    rows_by_day = warehouse_event_ids_by_day(engine, "downloads_batch", first, last)

    def read_day(day: str) -> tuple[Counter, Counter]:
        landing: Counter = Counter()
        for key in sorted(landing_keys.get(day, [])):
            for record in landing_csv_records(_landing_object(s3, bucket, key)):
                landing[_record_id(record)] += 1
        curated: Counter = Counter()
        for key in sorted(curated_keys.get(day, [])):
            frame = pd.read_parquet(io.BytesIO(_body(s3, bucket, key)), columns=["event_id"])
            curated.update(str(v) for v in frame["event_id"])
        return landing, curated

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="reconcile") as pool:
        read = list(pool.map(read_day, days))
    return [_batch_day(day, landing, curated, rejected_by_day.get(day, Counter()), rows_by_day.get(day, Counter()))
            for day, (landing, curated) in zip(days, read)]


@dataclass
class ClientDelivery:
    """The stream client's accepted events against `downloads_stream`: every event accepted at
    least `grace` seconds ago must be there (younger ones may still be on their way)."""

    accepted: int
    due: int
    delivered: int
    missing: list[str]
    pending: int
    grace_seconds: float

    @property
    def ok(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        if not self.accepted:
            return "the stream client has had nothing accepted yet"
        if self.ok:
            return (f"{self.delivered:,} of {self.due:,} client events accepted over {self.grace_seconds:.0f} s ago "
                    f"are in downloads_stream ({self.pending:,} younger still on their way)")
        return (f"{len(self.missing):,} of {self.due:,} client events accepted over {self.grace_seconds:.0f} s ago "
                f"are NOT in downloads_stream: the drain is stalled or dropped them; e.g. "
                f"{', '.join(self.missing[:SHOWN_IDS])}")


def client_delivery(entries: Iterable[tuple[float, list[str]]], engine: sa.Engine, *, now: float,
                    grace_seconds: float, table: str = "downloads_stream", chunk: int = 5000) -> ClientDelivery:
    """Compare the client's ledger entries (accepted at, event ids) with the warehouse table."""
    from appdata.warehouse.loader import distinct_values

    due: list[str] = []
    pending = accepted = 0
    for at, ids in entries:
        accepted += len(ids)
        if now - at >= grace_seconds:
            due.extend(ids)
        else:
            pending += len(ids)
    due = list(dict.fromkeys(due))
    present: set[str] = set()
    for start in range(0, len(due), chunk):
        present.update(distinct_values(engine, table, "event_id", due[start:start + chunk]))
    missing = [event_id for event_id in due if event_id not in present]
    return ClientDelivery(accepted=accepted, due=len(due), delivered=len(due) - len(missing), missing=missing,
                          pending=pending, grace_seconds=grace_seconds)
