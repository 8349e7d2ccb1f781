"""The batch ETL (what Glue did): a landing CSV -> typed, deduplicated rows plus dead letters.

Plain functions over local files and frames; the Dagster assets move the bytes to and from S3.

Why two parsers: pyarrow reads a clean 1M-row CSV in about a second, but stops at the first
malformed row or invalid UTF-8 byte. Then the file is re-read with Python's csv module, which
keeps going and quarantines just that row ("row 7 has 21 fields"). Either way every row is
validated by `appdata.schema.validate_records`, so a batch row is rejected for the same reason
an API or stream record would be. Validation runs on batches of about CHUNK_ROWS rows gathered
across days: one call per 100k rows, not one per day (a year of small days costs one call).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from appdata.schema import EVENT_COLUMNS, FIELDS, NULL_TOKENS, validate_records

CHUNK_ROWS = 100_000
KEY_COLUMNS = ("event_id", "user_id", "download_date")

_ARROW_TYPES = {"str": pa.string(), "enum": pa.string(), "int": pa.int64(), "float": pa.float64(), "date": pa.date32()}
CURATED_SCHEMA = pa.schema([pa.field(f.name, _ARROW_TYPES[f.kind], nullable=not f.required) for f in FIELDS])
_NOT_TEXT = re.compile("[\udc80-\udcff]")  # bytes that were no UTF-8 (kept by errors="surrogateescape")


class LandingRefused(ValueError):
    """The whole landing file is refused: without a trustworthy header no row can be trusted."""

    def __init__(self, day: dt.date, reason: str):
        super().__init__(f"landing file of {day.isoformat()} refused: {reason}")
        self.day = day
        self.reason = reason


def _normalize(name: str) -> str:
    return name.replace("\ufeff", "").strip().lower()


def read_header(path: Path) -> list[str] | None:
    """The first CSV record of the file (BOM removed), or None when the file has none."""
    with open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        return next(csv.reader(text, strict=False), None)


def check_header(header: list[str] | None, day: dt.date) -> list[str]:
    """Column names in file order, or LandingRefused when the header is empty, missing or wrong.

    A reordered header is fine (columns are taken by name); a missing, unknown or repeated
    column is not: then values can't be attributed to fields, so nothing in the file is loaded.
    """
    expected = ", ".join(EVENT_COLUMNS)
    if not header or all(not _normalize(h) for h in header):
        raise LandingRefused(day, "the file is empty or its first line is blank: no header, so no row can be "
                                  f"trusted (expected header: {expected})")
    names = [_normalize(h) for h in header]
    if not any(n in EVENT_COLUMNS for n in names):
        raise LandingRefused(day, f"the header is missing: the first line ({len(names)} fields) names none of "
                                  f"the expected columns (expected header: {expected})")
    problems = []
    repeated = sorted({n for n in names if names.count(n) > 1})
    missing = [c for c in EVENT_COLUMNS if c not in names]
    unknown = [h.strip() for h, n in zip(header, names) if n not in EVENT_COLUMNS]
    if missing:
        problems.append("lacks " + ", ".join(missing))
    if unknown:
        problems.append("has unknown columns " + ", ".join(repr(u) for u in unknown))
    if repeated:
        problems.append("repeats " + ", ".join(repeated))
    if problems:
        raise LandingRefused(day, "the header " + "; ".join(problems) + f" (expected header: {expected})")
    return names


@dataclass
class ParsedLanding:
    """One landing file parsed into string columns (EVENT_COLUMNS order) and structural rejects."""

    table: pa.Table
    row_numbers: np.ndarray  # data-row number (1 = first row after the header) of each table row
    rejects: list[dict]  # {"row", "field", "reason", "record"} of rows no parser could split
    records: int  # data rows in the file (blank lines are not rows)
    parser: str  # "arrow" or "python"


def _read_fast(path: Path, names: list[str]) -> pa.Table | None:
    """pyarrow on all cores; None when the file has a malformed row or bytes that are no UTF-8."""
    placeholders = [f"c{i}" for i in range(len(names))]
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=placeholders, skip_rows=1, block_size=16 << 20),
            parse_options=pacsv.ParseOptions(invalid_row_handler=lambda _row: "error"),
            convert_options=pacsv.ConvertOptions(
                column_types={p: pa.string() for p in placeholders},
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    by_name = dict(zip(names, table.columns))
    return pa.table({c: by_name[c] for c in EVENT_COLUMNS})


def _printable(value: str) -> str:
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _structural_reject(number: int, fields: list[str], names: list[str], reason: str, field_name: str | None) -> dict:
    record: dict[str, Any] = {n: _printable(v) for n, v in zip(names, fields)}
    if len(fields) > len(names):
        record["_extra_fields"] = [_printable(v) for v in fields[len(names):]]
    return {"row": number, "field": field_name, "reason": reason, "record": record}


def _read_tolerant(path: Path, names: list[str]) -> tuple[pa.Table, np.ndarray, list[dict], int]:
    """Python's csv module, row by row: rows of the wrong width or with non-UTF-8 bytes are rejected."""
    width = len(names)
    position = {n: i for i, n in enumerate(names)}
    order = [position[c] for c in EVENT_COLUMNS]
    columns: list[list[str]] = [[] for _ in range(width)]
    batches: list[pa.RecordBatch] = []
    good_rows: list[int] = []
    rejects: list[dict] = []
    number = 0

    def flush() -> None:
        if columns[0]:
            batches.append(pa.record_batch([pa.array(columns[i], pa.string()) for i in order], names=list(EVENT_COLUMNS)))
            for column in columns:
                column.clear()

    with open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text, strict=False)
        next(reader, None)  # the header, checked by the caller
        for fields in reader:
            if not fields:
                continue  # a blank line is no row
            number += 1
            if len(fields) != width:
                rejects.append(_structural_reject(
                    number, fields, names,
                    f"row has {len(fields)} fields, the header has {width} (a shifted, split or truncated row)", None))
                continue
            bad = next((n for n, v in zip(names, fields) if _NOT_TEXT.search(v)), None)
            if bad is not None:
                rejects.append(_structural_reject(number, fields, names, f"{bad}: is not valid UTF-8 text", bad))
                continue
            for column, value in zip(columns, fields):
                column.append(value)
            good_rows.append(number)
            if len(columns[0]) >= CHUNK_ROWS:
                flush()
    flush()
    schema = pa.schema([(c, pa.string()) for c in EVENT_COLUMNS])
    table = pa.Table.from_batches(batches, schema=schema)
    return table, np.asarray(good_rows, dtype="int64"), rejects, number


def parse_landing(path: Path, day: dt.date) -> ParsedLanding:
    """Parse one landing CSV; raises LandingRefused when its header can't be trusted."""
    names = check_header(read_header(path), day)
    table = _read_fast(path, names)
    if table is not None:
        return ParsedLanding(table, np.arange(1, table.num_rows + 1, dtype="int64"), [], table.num_rows, "arrow")
    table, rows, rejects, records = _read_tolerant(path, names)
    return ParsedLanding(table, rows, rejects, records, "python")


def _raw_record(row: dict) -> dict:
    """A raw CSV row as a dead letter shows it: trimmed strings, None for the null tokens."""
    out = {}
    for key, value in row.items():
        if value is None or (isinstance(value, str) and value.strip().lower() in NULL_TOKENS):
            out[key] = None
        else:
            out[key] = value.strip() if isinstance(value, str) else value
    return out


def dead_letter_day(record: dict, fallback: dt.date) -> dt.date:
    """The day a dead letter is filed under: the record's download_date if it parses, else `fallback`."""
    value = record.get("download_date")
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    return fallback


@dataclass(eq=False)
class DayOutput:
    """What the ETL made of one landing day."""

    day: dt.date
    landing_key: str
    parquet_path: Path
    landing_rows: int = 0
    curated_rows: int = 0
    null_keys: int = 0
    duplicate_ids: int = 0  # duplicates that reached the curated file (must stay 0)
    parser: str = "arrow"
    rejects: list[dict] = field(default_factory=list)
    seen_ids: set = field(default_factory=set, repr=False)
    writer: pq.ParquetWriter | None = field(default=None, repr=False)
    pending: int = 0  # slices of this day still waiting in the validation buffer
    parsed_all: bool = False  # every slice of the file has been handed to the buffer

    @property
    def rejected_rows(self) -> int:
        return len(self.rejects)


class WindowETL:
    """Validates the days of a window in batches of ~CHUNK_ROWS rows, writing one Parquet per day.

    Feed it with `add_day`; take the finished days with `pop_completed` (their Parquet file is
    closed and can be uploaded); call `finish` at the end.
    """

    def __init__(self, workdir: Path, chunk_rows: int = CHUNK_ROWS):
        self.workdir = workdir
        self.chunk_rows = chunk_rows
        self.days: dict[dt.date, DayOutput] = {}
        self._buffer: list[tuple[DayOutput, pd.DataFrame, np.ndarray]] = []
        self._buffered_rows = 0
        self._completed: list[DayOutput] = []

    def add_day(self, day: dt.date, landing_key: str, parsed: ParsedLanding) -> None:
        out = DayOutput(day, landing_key, self.workdir / f"{day.isoformat()}.parquet",
                        landing_rows=parsed.records, parser=parsed.parser)
        out.rejects.extend(parsed.rejects)
        self.days[day] = out
        table = parsed.table
        for start in range(0, table.num_rows, self.chunk_rows):
            piece = table.slice(start, self.chunk_rows)
            frame = piece.to_pandas()
            self._buffer.append((out, frame, parsed.row_numbers[start:start + piece.num_rows]))
            out.pending += 1
            self._buffered_rows += piece.num_rows
            if self._buffered_rows >= self.chunk_rows:
                self._flush()
        out.parsed_all = True
        if out.pending == 0:
            self._complete(out)

    def finish(self) -> list[DayOutput]:
        self._flush()
        return self.pop_completed()

    def pop_completed(self) -> list[DayOutput]:
        done, self._completed = self._completed, []
        return done

    def _complete(self, out: DayOutput) -> None:
        if out.writer is None:
            pq.write_table(CURATED_SCHEMA.empty_table(), out.parquet_path)
        else:
            out.writer.close()
            out.writer = None
        out.seen_ids = set()
        out.rejects.sort(key=lambda r: (r["row"] is None, r["row"] or 0))
        self._completed.append(out)

    def _flush(self) -> None:
        if not self._buffer:
            return
        buffer, self._buffer, self._buffered_rows = self._buffer, [], 0
        raw = pd.concat([frame for _, frame, _ in buffer], ignore_index=True)
        row_numbers = np.concatenate([rows for _, _, rows in buffer])
        owner = np.concatenate([np.full(len(frame), i, dtype="int64") for i, (_, frame, _) in enumerate(buffer)])
        checked = validate_records(raw, first_row=0)

        rejected_pos = checked.rejected["row"].to_numpy(dtype="int64")
        for pos, fld, reason, record in zip(rejected_pos, checked.rejected["field"], checked.rejected["reason"],
                                            checked.rejected["record"]):
            buffer[owner[pos]][0].rejects.append(
                {"row": int(row_numbers[pos]), "field": fld, "reason": reason, "record": json.loads(record)})

        valid = checked.valid
        good_pos = np.setdiff1d(np.arange(len(raw)), rejected_pos, assume_unique=True)
        valid_owner = owner[good_pos]
        for index in np.unique(valid_owner):
            out = buffer[index][0]
            mask = valid_owner == index
            part = valid[mask].reset_index(drop=True)
            part_pos = good_pos[mask]
            keep = np.ones(len(part), dtype=bool)
            # A row of another day would escape the day's delete+insert in the warehouse (and
            # double on a re-run), so the file's own day is the only one accepted.
            other_day = (part["download_date"] != out.day).to_numpy()
            duplicate = (part["event_id"].duplicated(keep="first") | part["event_id"].isin(out.seen_ids)).to_numpy()
            for i in np.flatnonzero(other_day | duplicate):
                pos = part_pos[i]
                if other_day[i]:
                    fld, reason = "download_date", (f"download_date: {part.at[i, 'download_date']} is not the day "
                                                    f"of this landing file ({out.day.isoformat()})")
                else:
                    fld, reason = "event_id", "event_id: duplicate of an earlier row of this landing file"
                out.rejects.append({"row": int(row_numbers[pos]), "field": fld, "reason": reason,
                                    "record": _raw_record(raw.iloc[pos].to_dict())})
                keep[i] = False
            part = part[keep]
            out.seen_ids.update(part["event_id"].tolist())
            out.null_keys += int(part[list(KEY_COLUMNS)].isna().any(axis=1).sum())
            if len(part):
                arrow = pa.Table.from_pandas(part, schema=CURATED_SCHEMA, preserve_index=False)
                if out.writer is None:
                    out.writer = pq.ParquetWriter(out.parquet_path, CURATED_SCHEMA)
                out.writer.write_table(arrow)
                out.curated_rows += len(part)

        for out, _, _ in buffer:
            out.pending -= 1
        for out in dict.fromkeys(out for out, _, _ in buffer):
            if out.pending == 0 and out.parsed_all:
                self._complete(out)


def dead_letters(out: DayOutput, rejected_at: str) -> dict[dt.date, list[dict]]:
    """The day's rejects as dead letters (the shared contract), grouped by the day they are filed under."""
    grouped: dict[dt.date, list[dict]] = {}
    for reject in out.rejects:
        letter = {
            "source": "batch",
            "field": reject["field"],
            "reason": reject["reason"],
            "row": reject["row"],
            "record": reject["record"],
            "rejected_at": rejected_at,
            "landing_key": out.landing_key,
            "landing_day": out.day.isoformat(),
        }
        grouped.setdefault(dead_letter_day(reject["record"], out.day), []).append(letter)
    return grouped


def to_jsonl(letters: list[dict]) -> bytes:
    return "".join(json.dumps(letter, default=str, ensure_ascii=False) + "\n" for letter in letters).encode()
