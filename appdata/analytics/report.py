"""One self-contained HTML report: every figure inline as base64, no external JS or CSS.

Written to $APPDATA_HOME/reports/appdata_report.html and s3://<bucket>/reports/appdata_report.html,
where the API's /dashboard serves it from. Self-contained so it opens from a laptop, an e-mail
attachment or S3 alike, and loads with no network.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from appdata.analytics import plots
from appdata.analytics.marts import MARTS, read_mart
from appdata.contract import layout


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} .meta{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1rem 0} td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
figure{margin:2rem 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9rem}
"""


@dataclass
class Report:
    html: str
    images: dict[str, bytes]
    headline: dict[str, Any]


def render_figures(frames: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    return {key: draw(frames[mart]) for key, (_, mart, draw) in plots.FIGURES.items()}


def headline_numbers(frames: dict[str, pd.DataFrame]) -> dict[str, Any]:
    daily = frames["mart_downloads_daily"]
    numbers: dict[str, Any] = {f"rows_{name}": len(frame) for name, frame in frames.items()}
    numbers["downloads"] = int(daily["downloads"].astype("int64").sum()) if not daily.empty else 0
    numbers["days"] = int(daily["download_date"].nunique()) if not daily.empty else 0
    numbers["categories"] = int(daily["category"].nunique()) if not daily.empty else 0
    if not daily.empty:
        numbers["first_day"] = str(min(daily["download_date"]))
        numbers["last_day"] = str(max(daily["download_date"]))
    return numbers


def _table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("measure", "value")) -> str:
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table><tr><th>{header[0]}</th><th>{header[1]}</th></tr>{body}</table>"


def render_html(images: dict[str, bytes], headline: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    generated = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    figures = []
    for key, (caption, mart, _) in plots.FIGURES.items():
        figures.append(
            f'<figure id="figure-{key}"><img class="chart" id="chart-{key}" alt="{html.escape(caption)}" '
            f'src="{plots.data_uri(images[key])}"><figcaption>{html.escape(caption)} (from <code>{mart}</code>)'
            "</figcaption></figure>"
        )
    numbers = list(headline.items()) + list((extra or {}).items())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<title>appdata: app-download analytics</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>App-download analytics</h1>"
        f"<p class=\"meta\">Generated {generated} from the warehouse marts "
        f"({', '.join(MARTS)}); downloads from batch and stream clients together.</p>"
        f"<h2>Headline numbers</h2>{_table(numbers)}"
        + "".join(figures)
        + "</body></html>\n"
    )


def build_report(engine: sa.Engine, extra: dict[str, Any] | None = None) -> Report:
    frames = {name: read_mart(engine, name) for name in MARTS}
    images = render_figures(frames)
    headline = headline_numbers(frames)
    return Report(html=render_html(images, headline, extra), images=images, headline=headline)


def report_path(home: Path) -> Path:
    return Path(home) / layout.REPORT_KEY


def write_report(report: Report, home: Path, s3_client: Any | None = None, bucket: str | None = None) -> dict[str, str]:
    """Write the page under `home` (atomically) and, given a client, to s3://bucket/reports/."""
    path = report_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(report.html, encoding="utf-8")
    tmp.replace(path)
    where = {"path": str(path)}
    if s3_client is not None and bucket:
        s3_client.put_object(Bucket=bucket, Key=layout.REPORT_KEY, Body=report.html.encode("utf-8"),
                             ContentType="text/html; charset=utf-8")
        where["s3_uri"] = f"s3://{bucket}/{layout.REPORT_KEY}"
    return where
