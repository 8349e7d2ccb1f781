"""`appdata rejected list|show|replay`: act on dead letters; `appdata reconcile`: check the sinks."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Iterator

import click


def aws_failure(exc: BaseException | None) -> str | None:
    """The one-line reason of an AWS call that failed somewhere in `exc`'s chain (botocore's
    errors, raised directly or wrapped by Dagster), or None when no AWS call did."""
    from botocore.exceptions import BotoCoreError, ClientError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (BotoCoreError, ClientError)):
            text = re.sub(r"\s*<(?:!doctype|html).*$", " (an HTML error page)", " ".join(str(exc).split()),
                          flags=re.IGNORECASE)
            return f"{type(exc).__name__}: {text}"
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def exit_on_aws_errors(what: str) -> Iterator[None]:
    """An AWS call that fails ends the command with one line naming it (exit 1), not a traceback."""
    try:
        yield
    except Exception as exc:
        reason = aws_failure(exc)
        if reason is None:
            raise
        raise click.ClickException(f"{what} stopped: an AWS call failed: {reason}") from None


def day_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A click callback: the option's value when it is a day in YYYY-MM-DD form (`contract.days`)."""
    from appdata.contract.days import parse_day

    if value is None:
        return None
    try:
        return parse_day(value).isoformat()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _s3_and_settings():
    from appdata.config import Settings
    from appdata.defs.resources import build_resources

    settings = Settings.from_env()
    resources = build_resources(settings)
    return settings, resources


@click.group()
def rejected() -> None:
    """Rejected records (dead letters) from the API, the stream drain and the batch ETL."""


@rejected.command("list")
@click.option("--source", type=click.Choice(["api", "stream", "batch"]), default=None, help="Only this source.")
@click.option("--date", "date", default=None, metavar="YYYY-MM-DD", callback=day_option,
              help="Only this download day.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per rejected record (without the record).")
@exit_on_aws_errors("rejected list")
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
@exit_on_aws_errors("rejected show")
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
@exit_on_aws_errors("rejected replay")
def replay_command(key: str, fixed: str | None, direct: bool) -> None:
    """Replay the records of KEY through the normal path, once, without duplicates."""
    from appdata.config import client_api_key
    from appdata.reliability.deadletters import DeadLetterError, read_fixed_file, replay

    settings, resources = _s3_and_settings()
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
            api_key=client_api_key(settings),
        )
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(result.summary())
    if result.landing_keys:
        days = sorted({k.split("download_date=")[1].split("/")[0] for k in result.landing_keys})
        click.echo("re-run the batch partition(s) " + ", ".join(days) + " to load them (Dagster UI or a backfill)")


@click.command("reconcile")
@click.option("--stream", "do_stream", is_flag=True,
              help="The stream path: what Kinesis accepted (within retention) against the lake, DynamoDB "
              "and downloads_stream.")
@click.option("--batch", "do_batch", is_flag=True,
              help="The batch path: landing rows against curated + rejected, curated against downloads_batch.")
@click.option("--start", default=None, metavar="YYYY-MM-DD", callback=day_option,
              help="First download day (default: the first held).")
@click.option("--end", default=None, metavar="YYYY-MM-DD", callback=day_option,
              help="Last download day (default: the last held).")
@click.option("--grace", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Stream records that arrived less than this long ago are in flight, not judged "
              "[default: 300].")
@click.option("--json", "as_json", is_flag=True, help="Print the reconciliation as JSON.")
@click.pass_context
def reconcile_command(ctx: click.Context, do_stream: bool, do_batch: bool, start: str | None, end: str | None,
                      grace: float | None, as_json: bool) -> None:
    """Reconcile every sink by event id, per day (both paths unless --stream or --batch).

    Stream: every event the Kinesis stream accepted (decoded as the drain decodes it) must be in
    the lake, DynamoDB and downloads_stream exactly once, and every record the drain rejects must
    have a dead letter. Batch: landing = curated + rejected, curated = downloads_batch. Exit 1 on
    any mismatch, naming the day and the event ids; 0 when every day reconciles.
    """
    from appdata.reliability.reconcile import (
        STREAM_GRACE_SECONDS,
        batch_days,
        reconcile_batch,
        reconcile_stream_against_source,
    )

    if start and end and start > end:
        raise click.BadParameter(f"--start {start} is after --end {end}", param_hint="--start")
    both = not (do_stream or do_batch)
    settings, resources = _s3_and_settings()
    s3 = resources["s3"].get_client()
    results = []
    reference = None
    with exit_on_aws_errors("reconcile"), resources["warehouse"].connect() as engine:
        if do_stream or both:
            stream_results, reference = reconcile_stream_against_source(
                s3=s3, bucket=settings.bucket, dynamodb=resources["dynamodb"].get_client(),
                table=resources["dynamodb"].table_name, engine=engine, kinesis=resources["kinesis"].get_client(),
                stream=settings.stream, first=start, last=end,
                grace_seconds=STREAM_GRACE_SECONDS if grace is None else grace)
            results += stream_results
        if do_batch or both:
            days = sorted(d for d in batch_days(s3, settings.bucket, engine)
                          if (start is None or d >= start) and (end is None or d <= end))
            results += reconcile_batch(s3=s3, bucket=settings.bucket, engine=engine, days=days) if days else []
    failing = [r for r in results if not r.ok]
    if as_json:
        click.echo(json.dumps({"ok": not failing, "stream": reference.summary() if reference else None,
                               "days": [r.as_dict() for r in results]}, indent=2, default=str))
    else:
        if reference is not None:
            click.echo(reference.describe())
        for r in results:
            click.echo(("ok    " if r.ok else "FAIL  ") + r.describe())
        for pipeline in ("stream", "batch"):
            ran = [r for r in results if r.pipeline == pipeline]
            if pipeline == "stream" and not (do_stream or both) or pipeline == "batch" and not (do_batch or both):
                continue
            bad = [r.day for r in ran if not r.ok]
            if not ran:
                click.echo(f"{pipeline}: nothing to reconcile")
            elif bad:
                click.echo(f"{pipeline}: {len(bad)} of {len(ran)} day(s) NOT reconciled: {', '.join(bad)}")
            else:
                click.echo(f"{pipeline}: {len(ran)} day(s) reconciled ({ran[0].day}..{ran[-1].day})")
    if failing:
        ctx.exit(1)


def register(group: click.Group) -> None:
    """Add `appdata rejected` and `appdata reconcile` to the `appdata` group."""
    group.add_command(rejected)
    group.add_command(reconcile_command)
