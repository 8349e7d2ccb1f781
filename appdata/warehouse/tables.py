"""Warehouse tables, declared once with SQLAlchemy so the same DDL runs on DuckDB, PostgreSQL
and Redshift (distribution and sort keys apply on Redshift only)."""

from __future__ import annotations

import sqlalchemy as sa

from appdata.contract.schema import FIELDS

metadata = sa.MetaData()

_TYPES = {
    # 1,024 characters: Redshift counts VARCHAR in bytes, so it gets room for 4-byte UTF-8.
    "str": sa.String(1024).with_variant(sa.String(4096), "redshift"),
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
        # Redshift: co-locate a user's downloads; sorted by day, for the marts' range scans, then by
        # user, so within a day's blocks zone maps skip the users the recommendation refresh does
        # not ask for (Redshift has no index; nothing filters these tables on category).
        redshift_diststyle="KEY",
        redshift_distkey="user_id",
        redshift_sortkey=("download_date", "user_id"),
    )


# The incremental recommendation refresh reads a few users' downloads (`user_id IN (...)`): a
# B-tree serves that on PostgreSQL. Not on DuckDB: its zone-mapped column scan already answers an
# IN list of ~1,000 users over 5,000,000 rows in ~60 ms, an ART index did not beat it and made
# bulk loads 7x slower. Redshift has no indexes (see the sort key above).
USER_ID_INDEX_DIALECTS = ("postgresql",)


def user_id_index_ddl(table: str) -> str:
    return f'CREATE INDEX IF NOT EXISTS "ix_{table}_user_id" ON "{table}" (user_id)'


downloads_batch = _download_table("downloads_batch")
downloads_stream = _download_table("downloads_stream")

TABLES = {t.name: t for t in metadata.sorted_tables}
