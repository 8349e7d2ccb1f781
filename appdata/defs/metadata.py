"""Metadata values shared by the assets (kept apart from any one asset module)."""

import datetime as dt
import math
from typing import Any

import dagster as dg
import pandas as pd


def _plain(value: Any) -> str | int | float | bool | None:
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def preview(frame: pd.DataFrame, rows: int, empty: str = "(no rows)") -> dg.MetadataValue:
    """The first rows of a frame as a table of plain values: the UI shows ingested text as the text
    it is, where Markdown would turn `[x](https://...)` or `![](...)` into live links and images."""
    head = frame.head(rows)
    if head.empty:
        return dg.MetadataValue.text(empty)
    records = [dg.TableRecord({str(k): _plain(v) for k, v in row.items()}) for row in head.to_dict("records")]
    schema = dg.TableSchema(columns=[dg.TableColumn(str(c), "string") for c in head.columns])
    return dg.MetadataValue.table(records, schema)
