"""Warehouse tables, declared once with SQLAlchemy so the same DDL runs on DuckDB, PostgreSQL
and Redshift (distribution and sort keys apply on Redshift only)."""

from __future__ import annotations

import sqlalchemy as sa

from appdata.schema import FIELDS

metadata = sa.MetaData()

_TYPES = {
    "str": sa.String(1024),
    "enum": sa.String(16),
    "int": sa.BigInteger(),
    "float": sa.Float(53),
    "date": sa.Date(),
}


def _event_columns() -> list[sa.Column]:
    return [
        sa.Column(f.name, _TYPES[f.kind], nullable=not f.required or f.name not in ("event_id", "user_id", "download_date"))
        for f in FIELDS
    ]


def _download_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        *_event_columns(),
        # Redshift: co-locate a user's downloads, prune by day in the marts' range scans.
        redshift_diststyle="KEY",
        redshift_distkey="user_id",
        redshift_sortkey=("download_date", "category"),
    )


downloads_batch = _download_table("downloads_batch")
downloads_stream = _download_table("downloads_stream")

apps = sa.Table(
    "apps",
    metadata,
    sa.Column("app", sa.String(1024), nullable=False),
    sa.Column("category", sa.String(1024), nullable=False),
    sa.Column("rating", sa.Float(53), nullable=False),
    sa.Column("reviews", sa.BigInteger(), nullable=False),
    sa.Column("size_mb", sa.Float(53)),
    sa.Column("installs", sa.BigInteger(), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("price", sa.Float(53), nullable=False),
    sa.Column("content_rating", sa.String(1024), nullable=False),
    sa.Column("genres", sa.String(1024), nullable=False),
    sa.Column("last_updated", sa.Date(), nullable=False),
    sa.Column("current_ver", sa.String(1024), nullable=False),
    sa.Column("android_ver", sa.String(1024), nullable=False),
    redshift_diststyle="ALL",
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.BigInteger(), nullable=False),
    sa.Column("name", sa.String(1024), nullable=False),
    sa.Column("location", sa.String(1024), nullable=False),
    sa.Column("age", sa.BigInteger(), nullable=False),
    sa.Column("client", sa.String(16), nullable=False),
    redshift_diststyle="ALL",
)

TABLES = {t.name: t for t in metadata.sorted_tables}
