"""The figures an app developer looks at, drawn from the marts as PNG bytes.

Uses matplotlib's object API with the Agg canvas directly (no pyplot global state), so plots
render the same in a Dagster run worker, a test or a server, with no display.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from appdata.sources.users import AGE_BANDS

TOP_CATEGORIES = 6
DPI = 80
AGE_ORDER = [label for _, _, label in AGE_BANDS]


def literal(label: object) -> str:
    """A label matplotlib draws as the text it is: every `$` escaped, so no mathtext runs (an app
    named `$\\foo$` would otherwise be typeset, or fail the whole figure). One-to-one, so
    distinct labels stay distinct categories."""
    return str(label).replace("$", r"\$")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _empty(fig: Figure, title: str) -> bytes:
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, "no downloads yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return _png(fig)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown the Dagster UI renders as an inline image (asset metadata)."""
    return f"![{alt}]({data_uri(png)})"


def downloads_over_time(daily: pd.DataFrame) -> bytes:
    title = f"Downloads per day, top {TOP_CATEGORIES} categories"
    fig = Figure(figsize=(9, 4))
    if daily.empty:
        return _empty(fig, title)
    frame = daily.assign(downloads=daily["downloads"].astype("int64"),
                         download_date=pd.to_datetime(daily["download_date"]))
    top = frame.groupby("category")["downloads"].sum().nlargest(TOP_CATEGORIES).index
    pivot = (frame[frame["category"].isin(top)]
             .pivot_table(index="download_date", columns="category", values="downloads", aggfunc="sum", fill_value=0)
             .sort_index())
    if len(pivot) > 90:  # years of days: weekly totals read better than a hairball
        pivot = pivot.resample("W").sum()
        title = title.replace("per day", "per week")
    ax = fig.add_subplot()
    for category in top:
        if category in pivot:
            ax.plot(pivot.index, pivot[category], marker="o" if len(pivot) < 40 else None, label=literal(category))
    ax.set_title(title)
    ax.set_ylabel("downloads")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _png(fig)


def audience(aud: pd.DataFrame, top_locations: int = 15) -> bytes:
    title = "Audience: downloads by age band and location"
    fig = Figure(figsize=(11, 4.5))
    if aud.empty:
        return _empty(fig, title)
    frame = aud.assign(downloads=aud["downloads"].astype("int64"))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2]})
    by_band = frame.groupby("age_band")["downloads"].sum().reindex(AGE_ORDER, fill_value=0)
    left.bar(by_band.index, by_band.values, color="#4C72B0")
    left.set_title("downloads by age band")
    left.tick_params(axis="x", rotation=45)
    locations = frame.groupby("location")["downloads"].sum().nlargest(top_locations).index
    grid = (frame[frame["location"].isin(locations)]
            .pivot_table(index="age_band", columns="location", values="downloads", aggfunc="sum", fill_value=0)
            .reindex(index=AGE_ORDER, columns=list(locations), fill_value=0))
    image = right.imshow(grid.values, aspect="auto", cmap="Blues")
    right.set_xticks(np.arange(len(grid.columns)), [literal(c) for c in grid.columns], rotation=60, ha="right",
                     fontsize=8)
    right.set_yticks(np.arange(len(grid.index)), list(grid.index))
    right.set_title(f"downloads by age band x location (top {len(locations)} locations)")
    fig.colorbar(image, ax=right, shrink=0.8)
    fig.suptitle(title)
    return _png(fig)


def time_spent(spent: pd.DataFrame, top: int = 15) -> bytes:
    title = "Time spent in apps by category"
    fig = Figure(figsize=(11, 5))
    if spent.empty:
        return _empty(fig, title)
    frame = spent.assign(total_minutes=spent["total_minutes"].astype("int64"),
                         downloads=spent["downloads"].astype("int64"))
    per_category = frame.groupby("category")[["total_minutes", "downloads"]].sum()
    per_category["avg"] = per_category["total_minutes"] / per_category["downloads"].clip(lower=1)
    chosen = per_category.nlargest(top, "total_minutes").sort_values("total_minutes")
    left, right = fig.subplots(1, 2)
    left.barh([literal(c) for c in chosen.index], chosen["total_minutes"] / 60.0, color="#55A868")
    left.set_xlabel("total hours")
    left.set_title(f"total time, top {len(chosen)} categories")
    left.tick_params(axis="y", labelsize=8)
    avg = frame.assign(weighted=frame["avg_minutes"].astype(float) * frame["downloads"])
    grid = (avg[avg["category"].isin(chosen.index)].groupby(["category", "age_band"])[["weighted", "downloads"]].sum())
    grid = (grid["weighted"] / grid["downloads"].clip(lower=1)).unstack("age_band")
    grid = grid.reindex(index=list(chosen.index)[::-1], columns=AGE_ORDER)  # same order as the bars
    image = right.imshow(np.ma.masked_invalid(grid.values.astype(float)), aspect="auto", cmap="Greens")
    right.set_xticks(np.arange(len(AGE_ORDER)), AGE_ORDER, rotation=45)
    right.set_yticks(np.arange(len(grid.index)), [literal(c) for c in grid.index], fontsize=8)
    right.set_title("average minutes per download, by age band")
    fig.colorbar(image, ax=right, shrink=0.8)
    fig.suptitle(title)
    return _png(fig)


def charts(chart: pd.DataFrame, categories: int = TOP_CATEGORIES) -> bytes:
    title = "Top charts: the 10 most downloaded apps of the last 30 days"
    fig = Figure(figsize=(12, 7))
    if chart.empty:
        return _empty(fig, title)
    frame = chart.assign(downloads=chart["downloads"].astype("int64"), chart_rank=chart["chart_rank"].astype("int64"))
    top = frame.groupby("category")["downloads"].sum().nlargest(categories).index
    cols = 3
    rows = int(np.ceil(len(top) / cols))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, category in zip(axes, top):
        part = frame[frame["category"] == category].sort_values("chart_rank", ascending=False)
        labels = [literal(f"{r}. {a[:24]}") for r, a in zip(part["chart_rank"], part["app"])]
        ax.barh(labels, part["downloads"], color="#C44E52")
        ax.set_title(literal(category), fontsize=10)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[len(top):]:
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)


FIGURES = {
    "downloads_over_time": ("Downloads over time by category", "mart_downloads_daily", downloads_over_time),
    "audience": ("Audience by age band and location", "mart_audience", audience),
    "time_spent": ("Time spent by category", "mart_time_spent", time_spent),
    "charts": ("Top charts per category", "mart_charts", charts),
}
