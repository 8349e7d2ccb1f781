"""`appdata rejected list|show|replay`: act on dead letters from the CLI."""

from __future__ import annotations

import json

import click


def _s3_and_settings():
    from appdata.config import Settings
    from appdata.resources import build_resources

    settings = Settings.from_env()
    resources = build_resources(settings)
    return settings, resources


@click.group()
def rejected() -> None:
    """Rejected records (dead letters) from the API, the stream drain and the batch ETL."""


@rejected.command("list")
@click.option("--source", type=click.Choice(["api", "stream", "batch"]), default=None, help="Only this source.")
@click.option("--date", "date", default=None, metavar="YYYY-MM-DD", help="Only this download day.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per rejected record (without the record).")
def list_command(source: str | None, date: str | None, as_json: bool) -> None:
    """List rejected records not yet replayed: source, date, key, field, reason."""
    from appdata.reliability.deadletters import DeadLetterError, format_table, list_dead_letters

    settings, resources = _s3_and_settings()
    try:
        letters = list_dead_letters(resources["s3"].get_client(), settings.bucket, source=source, date=date)
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        for d in letters:
            click.echo(json.dumps({"source": d.source, "date": d.date, "key": d.key, "line": d.line,
                                   "field": d.field, "reason": d.reason}))
        return
    if not letters:
        click.echo("no rejected records")
        return
    click.echo(format_table(letters))
    keys = {d.key for d in letters}
    click.echo(f"{len(letters)} rejected record(s) in {len(keys)} object(s); "
               "`appdata rejected show KEY` prints one, `appdata rejected replay KEY --fixed FILE` replays it")


@rejected.command("show")
@click.argument("key")
def show_command(key: str) -> None:
    """Print the dead letters of KEY as JSON lines (edit them, then replay with --fixed)."""
    from appdata.reliability.deadletters import DeadLetterError, show_dead_letters

    settings, resources = _s3_and_settings()
    try:
        letters = show_dead_letters(resources["s3"].get_client(), settings.bucket, key)
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from exc
    for d in letters:
        click.echo(json.dumps({"source": d.source, "field": d.field, "reason": d.reason, "record": d.record,
                               **d.context}, default=str))


@rejected.command("replay")
@click.argument("key")
@click.option("--fixed", "fixed", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON lines of the corrected records (bare records or lines as `show` prints them).")
@click.option("--direct", is_flag=True, help="api/stream records: PutRecords to Kinesis instead of POST to the API.")
def replay_command(key: str, fixed: str | None, direct: bool) -> None:
    """Replay the records of KEY through the normal path, once, without duplicates."""
    from appdata.config import api_keys_from_env
    from appdata.reliability.deadletters import DeadLetterError, read_fixed_file, replay

    settings, resources = _s3_and_settings()
    keys = api_keys_from_env()
    try:
        result = replay(
            s3_client=resources["s3"].get_client(),
            bucket=settings.bucket,
            key=key,
            fixed_records=read_fixed_file(fixed) if fixed else None,
            direct=direct,
            kinesis_client=resources["kinesis"].get_client() if direct else None,
            stream=settings.stream,
            api_url=settings.api_url,
            api_key=keys[0] if keys else None,
        )
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(result.summary())
    if result.landing_keys:
        days = sorted({k.split("download_date=")[1].split("/")[0] for k in result.landing_keys})
        click.echo("re-run the batch partition(s) " + ", ".join(days) + " to load them (Dagster UI or a backfill)")


def register(group: click.Group) -> None:
    """Add `appdata rejected` to the `appdata` group."""
    group.add_command(rejected)
