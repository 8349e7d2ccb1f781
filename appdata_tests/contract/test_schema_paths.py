"""validate_records has two paths (per-value Python for small frames, pandas for large ones):
whatever a client sends, both must accept the same rows with the same typed values and reject
the same rows with the same field, reason and record."""

from __future__ import annotations

import datetime as dt
import math
import os

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appdata.contract import schema
from appdata_tests.support.events import make_event

TODAY = dt.date.today()

TRICKY = [
    None, math.nan, math.inf, -math.inf, "", " ", "\t", "NaN", "nan", "null", " Null ", "None", "NA", "n/a", "<NA>",
    "NaT", "inf", "-Infinity", "abc", "True", True, False,
    0, 1, -1, 5, 13, 12, 120, 121, 1440, 1441, 10**15 - 1, 10**15, 2**53 + 1, 2**63, -(2**63) - 1, 10**20, 10**30,
    0.0, -0.0, 1.0, 1.5, 4.2, 5.0, 5.01, 1e3, 1e-5, 1e16, 1e300, 0.1 + 0.2, 12.5, 999.99, 1000.0, 1000.01, 10_000.5,
    "0", "-0", "-0.0", "+0", "007", "1.5", "1.0", " 42 ", "+5", ".5", "1.", "1e3", "1E3", "1e+3", "1e-05", "1e5",
    "1e6", "1e400", "-1e400", "12345678901234567", "123456789012345", "1_000", "1,000", "0x10", "1d5", "--5",
    "e5", ".", "+", "٣", "１２", "10,000+", "$1.99", "4.1.2", "3 ",
    "2020-02-30", "2020-02-29", "2019-02-29", "7-Jan-18", "2020-1-5", "2020-01-05T10:00:00", "2020-01-05 junk",
    " 2018-07-01 ", "20200105", "2020/01/05", "0001-01-01", "0000-01-01", "9999-12-31", "2007-12-31",
    "2008-01-01", "２０２０-01-01", "2100-01-01", (TODAY + dt.timedelta(days=2)).isoformat(),
    (TODAY + dt.timedelta(days=3)).isoformat(), dt.date(2020, 1, 2), dt.datetime(2020, 1, 2, 3, 4, 5),
    dt.date(2007, 12, 31), dt.datetime(2099, 1, 1), TODAY + dt.timedelta(days=3),
    "Free", "Paid", "free", " Paid ", "FREE", "Everyone", "ünïcödé", "İ", "\u3000x\u3000", "a\x00b",
]


def compare(frame: pd.DataFrame, first_row: int = 0) -> bool:
    """Assert both paths agree on `frame`; False when the small path declined it (handed it over)."""
    slow = schema._validate_vectorized(frame.reset_index(drop=True), first_row)
    assert_same(schema.validate_records(frame, first_row=first_row), slow)
    try:
        fast = schema._validate_small(frame.reset_index(drop=True), first_row)
    except schema._Unusual:
        return False
    assert_same(fast, slow)
    return True


def assert_same(fast: schema.Validation, slow: schema.Validation) -> None:
    pd.testing.assert_frame_equal(fast.valid, slow.valid, check_exact=True)
    pd.testing.assert_frame_equal(fast.rejected, slow.rejected, check_exact=True)
    # assert_frame_equal takes -0.0 for 0.0; JSON does not
    assert repr(fast.valid.to_dict("list")) == repr(slow.valid.to_dict("list"))


def as_csv_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """What the batch ETL hands over: every cell a string or missing, pandas' str dtype."""
    return frame.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)).astype("str")


def test_every_tricky_value_in_every_field_gets_the_same_verdict_on_both_paths():
    handed_over = {}  # by field kind: positions in TRICKY of values the small path leaves to pandas
    for kind, name in {"str": "app", "enum": "type", "int": "age", "float": "size_mb", "date": "download_date"}.items():
        one_per_row = schema.records_to_frame([make_event(i, **{name: value}) for i, value in enumerate(TRICKY)])
        handed_over[kind] = set()
        for position in range(len(TRICKY)):
            try:
                schema._validate_small(one_per_row.iloc[[position]].reset_index(drop=True), 0)
            except schema._Unusual:
                handed_over[kind].add(position)
    usual, unusual = [], []
    for spec in schema.FIELDS:
        for position, value in enumerate(TRICKY):
            row = make_event(position, **{"event_id": f"e{position}", spec.name: value})
            (unusual if position in handed_over[spec.kind] else usual).append(row)
        usual.append({k: v for k, v in make_event(0, event_id="e").items() if k != spec.name})
    assert len(usual) > 0.8 * (len(usual) + len(unusual))
    frame = schema.records_to_frame(usual)
    assert compare(frame, first_row=1), "the small path handed over a frame of values it decides one by one"
    assert len(schema.validate_records(frame).rejected) > 0.3 * len(usual)
    assert compare(as_csv_strings(frame))
    assert not compare(schema.records_to_frame(unusual))


def test_a_typical_api_batch_takes_the_small_path():
    events = [make_event(i, event_id=f"e{i}") for i in range(500)]
    events[3]["age"] = 5
    events[4]["download_date"] = "7-Jan-18"
    events[5]["size_mb"] = "NaN"
    frame = schema.records_to_frame(events)
    assert compare(frame)
    assert schema.validate_records(frame).counts == {"valid": 498, "rejected": 2}


def test_empty_and_column_less_frames_agree():
    assert compare(schema.records_to_frame([]))
    assert compare(pd.DataFrame({"user_id": [1, None]}, dtype=object))
    assert compare(pd.DataFrame({"size_mb": [None]}, dtype=object))


VALUES = st.one_of(
    st.sampled_from(TRICKY),
    st.integers(min_value=-(10**17), max_value=10**17),
    st.floats(allow_nan=True, allow_infinity=True),
    st.from_regex(r"\A\s?[+-]?[0-9]{0,17}\.?[0-9]{0,4}(e[+-]?[0-9]{1,3})?\s?\Z"),
    st.from_regex(r"\A\s?[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,3}[T ]?\s?\Z"),
    st.dates(min_value=dt.date(1, 1, 1)),
    st.text(max_size=6),
)


@st.composite
def frames(draw) -> pd.DataFrame:
    rows = []
    for i in range(draw(st.integers(1, 6))):
        record = make_event(i, event_id=f"e{i}")
        for name in draw(st.lists(st.sampled_from(schema.EVENT_COLUMNS), max_size=4)):
            if draw(st.integers(0, 9)) == 0:
                record.pop(name, None)
            else:
                record[name] = draw(VALUES)
        rows.append(record)
    frame = schema.records_to_frame(rows)
    return as_csv_strings(frame) if draw(st.booleans()) else frame


@settings(max_examples=int(os.environ.get("APPDATA_SCHEMA_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.integers(0, 2))
def test_random_frames_get_the_same_validation_on_both_paths(frame, first_row):
    compare(frame, first_row)


@pytest.mark.parametrize("text", ["-0", "12345678901234567", "1e16", "1_000"])
def test_values_whose_parse_depends_on_pandas_go_to_pandas(text):
    frame = schema.records_to_frame([make_event(0, age=text), make_event(1, age="20.5")])
    assert not compare(frame)


def test_typed_records_agree_with_schema_frame_to_records():
    events = [make_event(i, event_id=f"e{i}") for i in range(30)]
    events[3]["size_mb"] = "NaN"
    events[4]["age"] = "45"
    events[5]["rating"] = " 3.5 "
    valid = schema.validate_records(schema.records_to_frame(events)).valid
    assert schema.typed_records(valid) == schema.frame_to_records(valid)
