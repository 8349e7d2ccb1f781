"""`appdata lake`: the lake's Iceberg table from the terminal (thin: pyiceberg and DuckDB do the work)."""

from __future__ import annotations

import click


@click.group()
def lake() -> None:
    """The lake's Iceberg table of downloads (stream and batch)."""


@lake.command()
@click.argument("query")
@click.option("--since", "since", default=None, metavar="YYYY-MM-DD",
              help="Only days from this one (the scan reads only those partitions)")
def sql(query: str, since: str | None) -> None:
    """Run a DuckDB QUERY over the table, visible as `downloads`, e.g.
    appdata lake sql "SELECT source, count(*) FROM downloads GROUP BY source"."""
    import datetime as dt
    import re

    from appdata.lake import open_downloads

    table = open_downloads()
    if since is None:
        scan = table.scan()
    else:
        try:
            start = dt.date.fromisoformat(since) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", since) else None
        except ValueError:
            start = None
        if start is None:
            raise click.BadParameter(f"{since!r} is not a date YYYY-MM-DD", param_hint="--since")
        scan = table.scan(row_filter=f"download_date >= '{start.isoformat()}'")
    connection = scan.to_duckdb("downloads")
    click.echo(connection.sql(query).df().to_string(index=False))


@lake.command()
def files() -> None:
    """Data files, size and rows per day and source (what compaction keeps bounded)."""
    from appdata.lake import open_downloads
    from appdata.lake.maintenance import files_by_partition

    for part in files_by_partition(open_downloads()):
        click.echo(f"{part.day}  {part.source:<6}  {part.files:>5} files  {part.bytes:>12,} bytes  {part.rows:>10,} rows")


def register(group: click.Group) -> None:
    group.add_command(lake)
