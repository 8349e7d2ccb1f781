"""The batch ETL (what Glue did): a landing CSV -> typed, deduplicated rows plus dead letters.

Plain functions over local files and frames; the Dagster assets move the bytes to and from S3.

Why two parsers: pyarrow reads a clean 1M-row CSV in about a second, but stops at the first
malformed row or invalid UTF-8 byte. Then the file is re-read with `landing_rows` (Python's csv
module, line by line), which keeps going and quarantines just that row ("row 7 has 21 fields").
pyarrow's result is also set aside when a value holds a line break or the last line ends inside
a quote: only `landing_rows` tells a quoted value that spans lines from an unterminated quote.
Reconciliation and `appdata demo` count landing rows with `landing_rows` too, so every reader
of a landing file sees the same rows. Either way every row is validated by
`appdata.contract.schema.validate_records`, so a batch row is rejected for the same reason an API or
stream record would be. Validation runs on batches of about CHUNK_ROWS rows gathered across
days: one call per 100k rows, not one per day (a year of small days costs one call).

A landing file may be gzip-compressed (by name `.csv.gz` or by its magic bytes); one that is
UTF-16, a ZIP archive, or separated by ';' or tabs is refused whole, with that named.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gzip
import io
import json
import re
import shutil
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from appdata.contract import deadletters
from appdata.contract.schema import DYNAMODB_SMALLEST, EVENT_COLUMNS, FIELDS, MIN_DATE, NULL_TOKENS, validate_records

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


# --- reading a landing file line by line ---------------------------------------------------------
# A row the contract can hold is a few tens of KB (20 fields of at most schema.MAX_TEXT_CHARS), so
# a physical line, or a record whose quoted value spans lines, is read up to MAX_LINE_CHARS: a
# longer row is rejected without being read to its end (memory stays bounded whatever the file),
# and csv's field size limit (131,072 by default, which used to crash the ETL and the
# reconciliation) is raised above that cap, so no value reaches it.
MAX_LINE_CHARS = 1 << 20
KEPT_CHARS = 1024  # of each value of an over-long row, in its dead letter
GZIP_MAGIC = b"\x1f\x8b"
if csv.field_size_limit() <= MAX_LINE_CHARS:
    csv.field_size_limit(MAX_LINE_CHARS + 1)

Row = tuple[int, list[str], "str | None", "str | None"]  # (row number, fields, problem, field named)


def _text(raw: IO[bytes]) -> io.TextIOWrapper:
    """A landing file's text: UTF-8 (BOM dropped), bytes that are no UTF-8 kept as surrogates."""
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")


class _OverLong:
    """A physical line of MAX_LINE_CHARS characters or more: its head, the rest skipped."""

    __slots__ = ("head",)

    def __init__(self, head: str):
        self.head = head


def _read_line(text: IO[str]) -> str | _OverLong:
    line = text.readline(MAX_LINE_CHARS)
    if len(line) < MAX_LINE_CHARS or line[-1] in "\r\n":
        return line
    rest = line
    while len(rest) == MAX_LINE_CHARS and rest[-1] not in "\r\n":
        rest = text.readline(MAX_LINE_CHARS)
    return _OverLong(line)


def _fields_of(line: str) -> list[str]:
    """The fields of one physical line on its own (a quote it leaves open runs to its end)."""
    return next(csv.reader((line.rstrip("\r\n"),), strict=False), [])


class _RanOn(Exception):
    """The record being read runs past its first line in a way no quoted value does."""


class _Skipped(Exception):
    def __init__(self, head: str):
        super().__init__("over-long line")
        self.head = head


class _Lines:
    """The physical lines of a landing text as csv.reader takes them. The lines of the record being
    read are kept (`take`), so that a record found to be an unterminated quote can be taken apart
    and its lines after the first read again as rows (`reread`)."""

    def __init__(self, text: IO[str]):
        self._readline = text.readline
        self._again: deque = deque()
        self._first: str | None = None  # the record's first line
        self._more: list | None = None  # its further lines, if csv asked for any
        self._chars = 0

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        if self._again:
            line = self._again.popleft()
        else:
            line = self._readline(MAX_LINE_CHARS)
            if len(line) == MAX_LINE_CHARS and line[-1] not in "\r\n":
                rest = line
                while len(rest) == MAX_LINE_CHARS and rest[-1] not in "\r\n":
                    rest = self._readline(MAX_LINE_CHARS)
                line = _OverLong(line)
        if self._first is None:  # the first line of a record
            if line.__class__ is not str:
                raise _Skipped(line.head)
            if not line:
                raise StopIteration
            self._first = line
            return line
        # csv asks for another line: a quote opened on the record's first line is still open.
        if self._more is None:
            self._more = []
            self._chars = len(self._first)
        self._more.append(line)
        if not line or line.__class__ is not str:
            raise _RanOn()  # the file ends, or an over-long line comes, inside the quote
        self._chars += len(line)
        if self._chars >= MAX_LINE_CHARS:
            raise _RanOn()
        return line

    def take(self) -> tuple[str | None, list | None]:
        """(first line, further lines or None) of the record just read; the next record starts afresh."""
        taken = self._first, self._more
        self._first = self._more = None
        return taken

    def reread(self, lines: list) -> None:
        self._again.extendleft(reversed([line for line in lines if line != ""]))


def read_first_line(text: IO[str]) -> list[str] | None:
    """The header: the fields of the text's first physical line, or None when there is no line."""
    line = _read_line(text)
    if isinstance(line, _OverLong):
        return _fields_of(line.head)
    return _fields_of(line) if line else None


def landing_rows(text: IO[str], names: list[str]) -> Iterator[Row]:
    """The data rows after the header, as (row number, fields, problem, field), problem None for
    a row that splits cleanly (its width is for the caller to judge). Blank lines are no rows.

    A quoted value may hold a line break, so a record may span lines; an unterminated quote also
    makes csv read on, and would swallow every following row into one (as it did: 3 rows counted
    for a 6-line file). A record that spans lines is taken for an unterminated quote when it ends
    with the file still inside the quote, when it grows to MAX_LINE_CHARS, or when its width is
    not the header's; then its first line alone is a rejected row and the next lines are read
    again as rows. A real value spanning lines closes its quote and ends a row of the right width,
    so it stays one row, whatever its later lines look like on their own (a line of a name may
    well hold as many commas as a row); the cost is that a row with a multi-line value AND a
    wrong width counts as 2+ rows, each rejected.
    """
    width = len(names)
    lines = _Lines(text)
    reader = csv.reader(lines, strict=False)
    number = 0

    def named(index: int) -> tuple[str, str]:
        """(field name or None, how a reason names it) of the field at `index`."""
        if 0 <= index < len(names):
            return names[index], names[index]
        return None, f"field {index + 1} (beyond the header's {len(names)})"

    def unterminated(first: str) -> Row:
        fields = _fields_of(first)
        name, label = named(len(fields) - 1)
        return (number, fields, f"{label}: a quote opened in this field is not closed on its line (an unterminated "
                                "quote); only this line is rejected, the lines after it are read as rows", name)

    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except _RanOn:
            first, more = lines.take()
            lines.reread(more)
            number += 1
            yield unterminated(first)
            continue
        except _Skipped as skipped:
            lines.take()
            number += 1
            fields = _fields_of(skipped.head)
            name, label = named(len(fields) - 1)
            yield (number, [value[:KEPT_CHARS] for value in fields],
                   f"{label}: the row is {MAX_LINE_CHARS:,} characters long or more (this field runs past that point), "
                   f"so it is rejected unread (values kept here: their first {KEPT_CHARS:,} characters)", name)
            continue
        except csv.Error as exc:  # not expected (the field limit is above MAX_LINE_CHARS): lose the row only
            lines.take()
            number += 1
            yield number, [], f"the row cannot be read as CSV: {exc}", None
            continue
        first, more = lines.take()
        if not fields:
            continue  # a blank line is no row
        number += 1
        if more is not None and len(fields) != width:
            lines.reread(more)
            yield unterminated(first)
            continue
        yield number, fields, None, None


def _gunzip_what_can_be(data: bytes) -> bytes:
    """gzip data decompressed as far as it goes (every member; a damaged tail is dropped)."""
    out, rest = [], data
    while rest[:2] == GZIP_MAGIC:
        inflate = zlib.decompressobj(wbits=31)
        try:
            out.append(inflate.decompress(rest))
        except zlib.error:
            break
        if not inflate.eof:
            break
        rest = inflate.unused_data
    return b"".join(out)


def _object_rows(data: bytes) -> tuple[list[str], Iterator[Row]]:
    """(header names, rows) of a landing object held in memory, gzip or not."""
    if data[:2] == GZIP_MAGIC:
        data = _gunzip_what_can_be(data)
    text = _text(io.BytesIO(data))
    header = read_first_line(text)
    if not header:
        return [], iter(())
    names = [_normalize(h) for h in header]
    return names, landing_rows(text, names)


def landing_records(data: bytes) -> list[dict[str, str]]:
    """Every data row of a landing object (CSV, or gzip-compressed CSV) as {header name: value},
    split exactly as the ETL splits it (`landing_rows`): rows the ETL rejects for their shape
    (wrong width, unterminated quote, over-long, bytes that are no UTF-8) count as rows too, since
    the ETL must account for each of them (curated or rejected). Bytes that are no UTF-8 become
    U+FFFD. A file without any line has no rows."""
    names, rows = _object_rows(data)
    return [{n: _printable(v) for n, v in zip(names, fields)} for _, fields, _, _ in rows]


def count_landing_rows(data: bytes) -> int:
    """Data rows of a landing object as the ETL counts them (see `landing_records`)."""
    return sum(1 for _ in _object_rows(data)[1])


def read_header(path: Path) -> list[str] | None:
    """The first CSV line of the file (BOM removed) as fields, or None when the file has none."""
    with open(path, "rb") as raw:
        return read_first_line(_text(raw))


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
         (b"\xfe\xff", "UTF-16"))
_WIDE = (("UTF-32", "utf-32-le"), ("UTF-32", "utf-32-be"), ("UTF-16", "utf-16-le"), ("UTF-16", "utf-16-be"))
_DELIMITERS = ((";", "';'"), ("\t", "tabs"), ("|", "'|'"))


def check_encoding(head: bytes, day: dt.date) -> None:
    """LandingRefused when the file's first bytes show no UTF-8 text: a UTF-16/32 byte order mark,
    a first line that reads as UTF-16/32 column names, or a ZIP archive (an Excel workbook)."""
    if head.startswith(b"PK\x03\x04"):
        raise LandingRefused(day, "the file is a ZIP archive (an Excel workbook?), expected CSV text "
                                  "(plain or gzip-compressed)")
    encoding = next((name for bom, name in _BOMS if head.startswith(bom)), None)
    if encoding is None and b"\x00" in head.split(b"\n", 1)[0]:
        for name, codec in _WIDE:
            words = re.split(r"[,;\t|\s]+", head[: len(head) // 4 * 4].decode(codec, "replace").lower())
            if sum(w.strip('"') in EVENT_COLUMNS for w in words) >= 2:
                encoding = name
                break
    if encoding:
        raise LandingRefused(day, f"the file is {encoding} encoded, expected UTF-8 (export or save it as UTF-8 CSV)")


def _other_delimiter(header: list[str]) -> str | None:
    line = ",".join(header)
    for sep, label in _DELIMITERS:
        if sum(_normalize(part).strip('"') in EVENT_COLUMNS for part in line.split(sep)) >= 2:
            return label
    return None


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
        delimiter = _other_delimiter(header)
        if delimiter:
            raise LandingRefused(day, f"the header is separated by {delimiter}, expected ',' (export or save the "
                                      f"file as comma-separated CSV; expected header: {expected})")
        raise LandingRefused(day, f"the header is missing: the first line ({len(names)} fields) names none of "
                                  f"the expected columns (expected header: {expected})")
    problems = []
    repeated = sorted({n for n in names if names.count(n) > 1})
    missing = [c for c in EVENT_COLUMNS if c not in names]
    unknown = [h.strip() for h, n in zip(header, names) if n not in EVENT_COLUMNS]
    if missing:
        problems.append("lacks " + ", ".join(missing))
    if unknown:
        problems.append("has unknown columns " + ", ".join(repr(u[:100]) for u in unknown))
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


def _may_hold(column: pa.ChunkedArray | pa.Array, *needles: bytes) -> bool:
    """Whether a value of a string column may hold one of these bytes: a scan of the data buffers
    (~30 ms for all columns of 1M rows); a sliced array's whole buffer is scanned, so a True may
    be a false alarm, never a False."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    for chunk in chunks:
        data = chunk.buffers()[2] if len(chunk) else None
        if data is not None and data.size:
            body = data.to_pybytes()
            if any(body.find(needle) >= 0 for needle in needles):
                return True
    return False


def _ends_inside_quote(path: Path) -> bool:
    """Whether the file's last line, when no line break ends it, leaves a quote open (pyarrow
    takes such a quote as closed at the end of the file; `landing_rows` rejects the row)."""
    with open(path, "rb") as raw:
        pos = raw.seek(0, io.SEEK_END)
        if not pos:
            return False
        raw.seek(pos - 1)
        if raw.read(1) in (b"\n", b"\r"):
            return False
        tail = b""
        while True:
            step = min(64 << 10, pos)
            pos -= step
            raw.seek(pos)
            tail = raw.read(step) + tail
            cut = max(tail.rfind(b"\n"), tail.rfind(b"\r"))
            if cut >= 0:
                tail = tail[cut + 1:]
                break
            if not pos:
                return False  # one line: the header
    reader = csv.reader((tail.decode("utf-8", "surrogateescape"), ""), strict=False)
    next(reader, None)
    return reader.line_num > 1


def _read_fast(path: Path, names: list[str]) -> pa.Table | None:
    """pyarrow on all cores; None when the file has a malformed row or bytes that are no UTF-8, or
    when a value holds a line break or the last line leaves a quote open: a quoted value may span
    lines, and an unterminated quote also does (pyarrow reads on to the next quote or the end of the
    file), so such files go to `landing_rows`, which tells the two apart."""
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
    if any(_may_hold(column, b"\n", b"\r") for column in table.columns) or _ends_inside_quote(path):
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
    """`landing_rows`, row by row: rows it could not split, rows of the wrong width and rows with
    non-UTF-8 bytes are rejected."""
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
        text = _text(raw)
        read_first_line(text)  # the header, checked by the caller
        for number, fields, problem, problem_field in landing_rows(text, names):
            if problem is not None:
                rejects.append(_structural_reject(number, fields, names, problem, problem_field))
                continue
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


@contextlib.contextmanager
def _plain_file(path: Path, day: dt.date) -> Iterator[Path]:
    """`path` itself, or, when it holds gzip data (clients compress), its decompressed copy next
    to it, removed afterwards. gzip data that does not decompress to its end refuses the file:
    a cut-short upload would otherwise load as a smaller day that reconciles."""
    with open(path, "rb") as raw:
        if raw.read(2) != GZIP_MAGIC:
            yield path
            return
    plain = path.with_name(path.name + ".plain")
    try:
        try:
            with gzip.open(path, "rb") as packed, open(plain, "wb") as out:
                shutil.copyfileobj(packed, out, 8 << 20)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise LandingRefused(day, f"the file is gzip-compressed but does not decompress ({exc}): it is damaged "
                                      "or cut short, so nothing of it is loaded") from exc
        yield plain
    finally:
        plain.unlink(missing_ok=True)


def parse_landing(path: Path, day: dt.date) -> ParsedLanding:
    """Parse one landing file (CSV, or gzip-compressed CSV); raises LandingRefused when it is no
    UTF-8 CSV text or its header can't be trusted."""
    with _plain_file(path, day) as plain:
        with open(plain, "rb") as raw:
            check_encoding(raw.read(64 << 10), day)
        names = check_header(read_header(plain), day)
        table = _read_fast(plain, names)
        if table is not None:
            return ParsedLanding(table, np.arange(1, table.num_rows + 1, dtype="int64"), [], table.num_rows, "arrow")
        table, rows, rejects, records = _read_tolerant(plain, names)
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


# --- a vectorized pre-screen (pyarrow.compute) ---------------------------------------------------
# validate_records is pandas and generic: 1M rows take ~35 s. Most rows are plainly fine, so
# every value is first tested against patterns that validate_records is certain to accept with
# the same typed value (text with no surrounding whitespace and no null token; plain decimal
# numbers within range; YYYY-MM-DD dates within range). Rows with any value outside those
# patterns - every suspect row - go through validate_records itself, which decides and explains.
# appdata_tests/test_batch_etl.py checks both paths agree on tricky values.

_PY_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
_NULLS = pa.array(sorted(NULL_TOKENS))


def _case_variants(word: str) -> set[str]:
    variants = {""}
    for ch in word:
        variants = {v + c for v in variants for c in {ch.lower(), ch.upper()}}
    return variants


_NULL_SPELLINGS = pa.array(sorted(set().union(*(_case_variants(t) for t in NULL_TOKENS))))  # "NaN", "Null", ...
_INT = r"^-?[0-9]{1,15}$"
_DECIMAL = r"^-?[0-9]{1,15}(\.[0-9]{1,15})?$"
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def _plain_text(column: pa.ChunkedArray, max_length: int | None = None) -> pa.ChunkedArray:
    """Non-empty, nothing Python's strip() would remove, not a null token, no NUL character (which
    validate_records rejects: PostgreSQL and Redshift refuse it) and at most `max_length` long."""
    trimmed = pc.utf8_trim(column, characters=_PY_WHITESPACE)
    length = pc.utf8_length(column)
    plain = pc.and_(pc.and_(pc.equal(trimmed, column), pc.greater(length, 0)),
                    pc.invert(pc.is_in(column, value_set=_NULL_SPELLINGS)))
    if max_length is not None:
        plain = pc.and_(plain, pc.less_equal(length, max_length))
    if _may_hold(column, b"\x00"):  # a clean column costs one buffer scan, not a test per value
        plain = pc.and_(plain, pc.invert(pc.match_substring(column, "\x00")))
    return plain


def _in_range(values: pa.ChunkedArray, spec) -> pa.ChunkedArray:
    ok = pc.and_(pc.is_valid(values), pc.or_(pc.equal(values, 0), pc.greater_equal(pc.abs(values), DYNAMODB_SMALLEST)))
    if spec.minimum is not None:
        ok = pc.and_(ok, pc.greater_equal(values, spec.minimum))
    if spec.maximum is not None:
        ok = pc.and_(ok, pc.less_equal(values, spec.maximum))
    return ok


def fast_validate(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """(typed rows that are certainly valid, boolean mask of those rows) for a table of strings."""
    latest = dt.date.today() + dt.timedelta(days=2)
    ok = None
    typed = {}
    for spec in FIELDS:
        column = table.column(spec.name)
        if spec.kind in ("str", "enum"):
            # the contract's text limit (appdata.contract.schema Field.max_length) is validate_records' to explain
            good = (pc.is_in(column, value_set=pa.array(spec.choices)) if spec.choices
                    else _plain_text(column, getattr(spec, "max_length", None)))
            values = column
        elif spec.kind in ("int", "float"):
            pattern = _INT if spec.kind == "int" else _DECIMAL
            number = pc.match_substring_regex(column, pattern)
            values = pc.cast(pc.if_else(number, column, "0"), pa.int64() if spec.kind == "int" else pa.float64())
            good = pc.and_(number, _in_range(values, spec))
            if not spec.required:  # null tokens are a valid "no value"
                null = pc.is_in(pc.utf8_lower(pc.utf8_trim(column, characters=_PY_WHITESPACE)), value_set=_NULLS)
                good = pc.or_(good, null)
                values = pc.if_else(null, pa.scalar(None, values.type), values)
        else:  # date
            shaped = pc.match_substring_regex(column, _DATE)
            text = pc.if_else(shaped, column, "2000-01-01")
            stamps = pc.strptime(text, format="%Y-%m-%d", unit="s", error_is_null=True)
            values = pc.cast(stamps, pa.date32())
            # strptime rolls 2018-02-30 over to March: a real date has the year, month and day
            # that were written (compared as numbers; strftime did the same at ~1 s per 1M rows)
            written = [pc.cast(pc.utf8_slice_codeunits(text, a, b), pa.int64()) for a, b in ((0, 4), (5, 7), (8, 10))]
            same = pc.and_(pc.and_(pc.equal(pc.year(stamps), written[0]), pc.equal(pc.month(stamps), written[1])),
                           pc.equal(pc.day(stamps), written[2]))
            shaped = pc.and_(shaped, same)
            good = pc.and_(pc.and_(shaped, pc.is_valid(values)),
                           pc.and_(pc.greater_equal(values, pa.scalar(MIN_DATE, pa.date32())),
                                   pc.less_equal(values, pa.scalar(latest, pa.date32()))))
        typed[spec.name] = values
        ok = good if ok is None else pc.and_(ok, good)
    # null (a date strptime could not read) is "not certain": validate_records decides on those rows
    mask = pc.fill_null(ok, False).to_numpy(zero_copy_only=False).astype(bool) if ok is not None else np.zeros(0, bool)
    rows = pa.table(typed).filter(pa.chunked_array([mask]) if len(mask) else mask)
    return rows.cast(CURATED_SCHEMA), mask


@dataclass(eq=False)
class DayOutput:
    """What the ETL made of one landing day: the client's drop plus any replay files next to it."""

    day: dt.date
    landing_key: str  # the day's first file (the client's drop)
    parquet_path: Path
    landing_keys: list[str] = field(default_factory=list)  # every file read, in the order read
    landing_rows: int = 0
    curated_rows: int = 0
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
        self._buffer: list[tuple[DayOutput, pa.Table, np.ndarray, int]] = []  # (day, rows, row numbers, file index)
        self._buffered_rows = 0
        self._completed: list[DayOutput] = []

    def add_day(self, day: dt.date, landing_key: str, parsed: ParsedLanding) -> None:
        self.add_files(day, [(landing_key, parsed)])

    def add_files(self, day: dt.date, files: list[tuple[str, ParsedLanding]]) -> None:
        """All landing files of one day, client's drop first: rows are numbered per file, and
        event_id is deduplicated across the files (the first row wins, so a replayed record
        that the drop already holds is rejected as a duplicate, never curated twice)."""
        out = DayOutput(day, files[0][0], self.workdir / f"{day.isoformat()}.parquet",
                        landing_keys=[key for key, _ in files],
                        landing_rows=sum(parsed.records for _, parsed in files),
                        parser="python" if any(parsed.parser == "python" for _, parsed in files) else "arrow")
        self.days[day] = out
        for index, (key, parsed) in enumerate(files):
            out.rejects.extend(dict(r, landing_key=key, _file=index) for r in parsed.rejects)
            table = parsed.table
            for start in range(0, table.num_rows, self.chunk_rows):
                piece = table.slice(start, self.chunk_rows)
                self._buffer.append((out, piece, parsed.row_numbers[start:start + piece.num_rows], index))
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
        out.rejects.sort(key=lambda r: (r.get("_file", 0), r["row"] is None, r["row"] or 0))
        self._completed.append(out)

    def _flush(self) -> None:
        if not self._buffer:
            return
        buffer, self._buffer, self._buffered_rows = self._buffer, [], 0
        raw = pa.concat_tables([piece for _, piece, _, _ in buffer]).combine_chunks()
        row_numbers = np.concatenate([rows for _, _, rows, _ in buffer])
        owner = np.concatenate([np.full(piece.num_rows, i, dtype="int64") for i, (_, piece, _, _) in enumerate(buffer)])

        def reject(pos: int, fld: str | None, reason: str, record: dict) -> None:
            out, _, _, file_index = buffer[owner[pos]]
            out.rejects.append({"row": int(row_numbers[pos]), "field": fld, "reason": reason, "record": record,
                                "landing_key": out.landing_keys[file_index] if out.landing_keys else out.landing_key,
                                "_file": file_index})

        typed, certain = fast_validate(raw)
        positions = np.flatnonzero(certain)
        suspect = np.flatnonzero(~certain)
        if suspect.size:
            checked = validate_records(raw.take(suspect).to_pandas(), first_row=0)
            bad = checked.rejected["row"].to_numpy(dtype="int64")
            for index, fld, reason, record in zip(bad, checked.rejected["field"], checked.rejected["reason"],
                                                  checked.rejected["record"]):
                reject(int(suspect[index]), fld, reason, json.loads(record))
            if len(checked.valid):
                rescued = pa.Table.from_pandas(checked.valid, schema=CURATED_SCHEMA, preserve_index=False)
                typed = pa.concat_tables([typed, rescued])
                positions = np.concatenate([positions, np.delete(suspect, bad)])
            order = np.argsort(positions, kind="stable")  # back to file order: "first" row wins below
            typed, positions = typed.take(order), positions[order]

        # Group the valid rows by day (not by slice): the dedupe below is per day, across files.
        day_of_slice = {}
        for i, (out, _, _, _) in enumerate(buffer):
            day_of_slice.setdefault(id(out), (len(day_of_slice), out))
        slice_day = np.array([day_of_slice[id(out)][0] for out, _, _, _ in buffer], dtype="int64")
        valid_day = slice_day[owner[positions]] if positions.size else np.zeros(0, "int64")
        for day_index, out in day_of_slice.values():
            mask = valid_day == day_index
            if not mask.any():
                continue
            part = typed.filter(mask)
            part_pos = positions[mask]
            # A row of another day would escape the day's delete+insert in the warehouse (and
            # double on a re-run), so the file's own day is the only one accepted.
            other_day = pc.not_equal(part.column("download_date"), pa.scalar(out.day, pa.date32()))
            other_day = other_day.to_numpy(zero_copy_only=False)
            duplicate = np.zeros(part.num_rows, dtype=bool)
            seen = out.seen_ids
            for i, event_id in enumerate(part.column("event_id").to_pylist()):
                if other_day[i]:
                    continue
                if event_id in seen:
                    duplicate[i] = True
                else:
                    seen.add(event_id)
            for i in np.flatnonzero(other_day | duplicate):
                pos = part_pos[i]
                if other_day[i]:
                    fld, reason = "download_date", (f"download_date: {part.column('download_date')[i]} is not the "
                                                    f"day of this landing file ({out.day.isoformat()})")
                else:
                    fld, reason = "event_id", "event_id: duplicate of an earlier row of this landing day"
                reject(int(pos), fld, reason, _raw_record(raw.slice(int(pos), 1).to_pylist()[0]))
            keep = ~(other_day | duplicate)
            if not keep.all():
                part = part.filter(keep)
            if part.num_rows:
                if out.writer is None:
                    out.writer = pq.ParquetWriter(out.parquet_path, CURATED_SCHEMA)
                out.writer.write_table(part)
                out.curated_rows += part.num_rows

        for out, _, _, _ in buffer:
            out.pending -= 1
        for out in dict.fromkeys(out for out, _, _, _ in buffer):
            if out.pending == 0 and out.parsed_all:
                self._complete(out)


def dead_letters(out: DayOutput, rejected_at: str) -> list[dict]:
    """The day's rejects as dead letters (`appdata.contract.deadletters`), in file and row order."""
    return [deadletters.letter("batch", field=reject["field"], reason=reject["reason"], row=reject["row"],
                               record=reject["record"], rejected_at=rejected_at,
                               landing_key=reject.get("landing_key", out.landing_key), landing_day=out.day.isoformat())
            for reject in out.rejects]
