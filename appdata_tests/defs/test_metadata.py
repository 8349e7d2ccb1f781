"""Previews of ingested rows in the Dagster UI are tables of plain text, never Markdown."""

import datetime as dt

import numpy as np
import pandas as pd

from appdata.defs.metadata import preview

MARKUP = ["[click](https://evil.example/x)", "![img](https://evil.example/p.png)", "<b>bold</b> | pipe"]


def test_ingested_text_is_shown_as_text_with_plain_values():
    frame = pd.DataFrame({"app": MARKUP, "installs": np.array([1, 2, 3], dtype="int64"),
                          "day": [dt.date(2020, 1, 1), None, dt.date(2020, 1, 3)], "rating": [4.5, np.nan, 3.0]})
    value = preview(frame, 10)
    assert type(value).__name__ == "TableMetadataValue"
    assert [r.data["app"] for r in value.records] == MARKUP  # each exactly as sent, in a cell of its own
    assert [r.data["installs"] for r in value.records] == [1, 2, 3]
    assert [r.data["day"] for r in value.records] == ["2020-01-01", None, "2020-01-03"]
    assert [r.data["rating"] for r in value.records] == [4.5, None, 3.0]
    assert preview(frame.head(0), 10).value == "(no rows)"
