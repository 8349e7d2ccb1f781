"""`appdata` subcommands of the stream concern: `appdata send`, `appdata drain`."""

import os

import click


@click.command()
@click.argument("csv_path", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--rate", type=float, default=None, help="Records per second (default: as fast as the API answers).")
@click.option("--batch-size", type=click.IntRange(1, 500), default=500, show_default=True)
@click.option("--limit", type=int, default=None, help="Send at most this many rows.")
@click.option("--start", type=int, default=0, show_default=True, help="Skip this many rows first.")
@click.option("--show-rejected", type=int, default=10, show_default=True, help="List up to N rejections.")
def send(csv_path, rate, batch_size, limit, start, show_rejected):
    """Post a client CSV (default: the stream client's data) to the ingest API in batches."""
    from appdata.config import Settings
    from appdata.sources.client_files import stream_csv_path
    from appdata.stream.client import ApiError, api_key, load_client_records, send_records

    settings = Settings.from_env()
    path = csv_path or stream_csv_path(settings.client_dir)
    if not csv_path and not path.exists():
        raise click.ClickException(f"no client data at {path}: materialize users_app_stream_client_data "
                                   "or pass a CSV path")
    try:
        key = api_key()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    records = load_client_records(path, start=start, limit=limit)
    click.echo(f"sending {len(records):,} records from {path} to {settings.api_url}")
    try:
        summary = send_records(records, api_url=settings.api_url, key=key, batch_size=batch_size, rate=rate,
                               progress=True)
    except ApiError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"sent {summary.sent:,} in {summary.batches} batches, {summary.seconds:.1f}s: "
               f"accepted {summary.accepted:,}, rejected {len(summary.rejected):,}")
    for item in summary.rejected[:show_rejected]:
        click.echo(f"  row {start + item['index'] + 1}: {item.get('field')}: {item.get('reason')}")


@click.command()
def drain():
    """Drain every shard up to now, in this process, as the daemon's consumer runs do.

    For a stack without the daemon (`appdata up --no-ui`, scripts). Each shard (parents before
    children) is consumed from its checkpoint (its oldest record the first time) under the
    shard's lease, range by range into the lake, DynamoDB, the warehouse and rejected/stream/,
    then the touched users' recommendations are refreshed. A shard whose lease a running
    consumer holds is left to it. Exit 0 when every range is delivered; 1 naming the shard and
    the reason otherwise (the range stays pending, and the next consumer drains it first).
    """
    from botocore.exceptions import ClientError

    from appdata.aws import error_code
    from appdata.config import Settings
    from appdata.defs.resources import build_resources
    from appdata.stream.consumer import Sinks, drain_until_caught_up
    from appdata.stream.leases import LeaseTable

    settings = Settings.from_env()
    resources = build_resources(settings)
    dynamodb_resource, warehouse = resources["dynamodb"], resources["warehouse"]
    kinesis, dynamodb = resources["kinesis"].get_client(), dynamodb_resource.get_client()
    sinks = Sinks(s3=resources["s3"].get_client(), bucket=settings.bucket, dynamodb=dynamodb,
                  table=dynamodb_resource.table_name, warehouse=warehouse.connect,
                  copy_iam_role=warehouse.copy_iam_role)
    leases = LeaseTable(dynamodb, dynamodb_resource.lease_table_name, settings.stream)

    def show(result) -> None:
        click.echo(f"  {result.shard_id} {result.first_sequence}..{result.last_sequence}: {result.records} records, "
                   f"{result.valid} valid, {result.rejected} rejected; lake {len(result.lake_objects)} object(s), "
                   f"DynamoDB {result.dynamodb_items} item(s), warehouse +{result.warehouse_inserted} row(s)")

    click.echo(f"draining every shard of {settings.stream} from its checkpoint to now")
    try:
        results = drain_until_caught_up(kinesis=kinesis, stream=settings.stream, leases=leases, sinks=sinks,
                                        owner=f"cli-{os.getpid()}", on_range=show,
                                        on_note=lambda level, text: click.echo(f"  {text}")).results
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise click.ClickException(f"{exc}: run `appdata provision`") from exc
        raise
    except Exception as exc:  # noqa: BLE001 - named, and the exit code says it
        raise click.ClickException(f"not delivered: {type(exc).__name__}: {exc} (the range stays pending; the "
                                   "next drain delivers it first)") from exc
    from appdata.privacy import forgotten
    from appdata.stream.table_writer import sync_stream_table

    table_rows = sum(c.rows for c in sync_stream_table(resources["lake_table"].open, kinesis, settings.stream, leases,
                                                       forgotten.ForgottenUsers(sinks.s3, settings.bucket)))
    users = set().union(*(r.users for r in results)) if results else set()
    with warehouse.connect() as engine:
        refreshed = _refresh_recommendations(engine, sinks.s3, sinks.bucket, dynamodb, sinks.table, users)
    click.echo(f"drained {sum(r.records for r in results):,} records in {len(results)} range(s): "
               f"{sum(r.valid for r in results):,} valid (in the lake, DynamoDB and downloads_stream; "
               f"+{sum(r.warehouse_inserted for r in results):,} new warehouse rows, +{table_rows:,} lake table rows), "
               f"{sum(r.rejected for r in results):,} rejected (dead letters under rejected/stream/){refreshed}")


def _refresh_recommendations(engine, s3, bucket: str, dynamodb, table: str, users: set[int]) -> str:
    """Fresh recommendations for the touched users, from the saved model and their own rows;
    derived data, so a failure is said and does not fail the drain."""
    from appdata.analytics.recommend import refresh_touched_users

    if not users:
        return ""
    try:
        done = refresh_touched_users(engine, s3, bucket, dynamodb, table, users)
    except Exception as exc:  # noqa: BLE001
        return f"; recommendations NOT refreshed for {len(users)} user(s): {type(exc).__name__}: {exc}"
    return (f"; {done.items_written:,} recommendation item(s) refreshed for {done.users:,} user(s) with the model "
            f"fitted at {done.model_fitted_at:%Y-%m-%d %H:%M:%S} UTC")


def register(group: click.Group) -> None:
    """Add this concern's commands to the `appdata` group."""
    group.add_command(send)
    group.add_command(drain)
