"""`appdata` subcommands of the stream concern: `appdata send`, `appdata drain`."""

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
    from appdata.stream.client import ApiUnavailable, api_key, load_client_records, send_records

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
    except ApiUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"sent {summary.sent:,} in {summary.batches} batches, {summary.seconds:.1f}s: "
               f"accepted {summary.accepted:,}, rejected {len(summary.rejected):,}")
    for item in summary.rejected[:show_rejected]:
        click.echo(f"  row {start + item['index'] + 1}: {item.get('field')}: {item.get('reason')}")


@click.command()
@click.option("--max-records", type=click.IntRange(1, 10_000), default=10_000, show_default=True,
              help="Records per range (one range = one drain_range call, as one sensor run drains).")
def drain(max_records):
    """Drain every shard up to now, in this process, with the code the sensor's runs use.

    Each shard (parents before children) is read from its oldest record (TRIM_HORIZON) to now
    in ranges of up to --max-records, and each range goes through `drain_range`: lake objects,
    DynamoDB items, warehouse rows, dead letters under rejected/stream/. Items and rows are keyed
    by the event, lake objects and dead letters by the range: draining again adds no item or row,
    rewrites the same objects for the same ranges, and restores what a sink lost (a range cut
    differently from an earlier drain, e.g. the sensor's, writes a second lake object with the
    same events, counted once by event id). Then the touched users' recommendations
    are refreshed, as the runs do.
    Exit 0 when every range is delivered; 1 naming the shard, the range and the reason otherwise.
    """
    from botocore.exceptions import ClientError

    from appdata.aws import error_code
    from appdata.config import Settings
    from appdata.defs.resources import build_resources
    from appdata.stream.drain import drain_range, list_shards, parents_of, read_shard, shard_order

    settings = Settings.from_env()
    resources = build_resources(settings)
    kinesis, s3, dynamodb = (resources["kinesis"].get_client(), resources["s3"].get_client(),
                             resources["dynamodb"].get_client())
    stream, bucket, table = settings.stream, settings.bucket, resources["dynamodb"].table_name
    try:
        shards = shard_order(list_shards(kinesis, stream))
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise click.ClickException(f"stream {stream} does not exist: run `appdata provision`") from exc
        raise
    click.echo(f"draining {len(shards)} shard(s) of {stream} from TRIM_HORIZON to now, "
               f"up to {max_records:,} records per range")
    failures: list[str] = []
    failed: set[str] = set()
    totals = {"ranges": 0, "records": 0, "valid": 0, "rejected": 0, "inserted": 0}
    users: set[int] = set()
    with resources["warehouse"].connect() as engine:
        for shard in shards:
            shard_id = shard["ShardId"]
            blocked = [p for p in parents_of(shard) if p in failed]
            if blocked:
                failures.append(f"{shard_id}: not drained, its parent {blocked[0]} was not delivered")
                failed.add(shard_id)
                continue
            done = {"ranges": 0, "records": 0, "valid": 0, "rejected": 0, "inserted": 0}
            first_seen = last_seen = None
            after = None
            while True:
                try:
                    read = read_shard(kinesis, stream, shard_id, after=after, max_records=max_records)
                except Exception as exc:  # noqa: BLE001 - named, and the exit code says it
                    failures.append(f"{shard_id}: not read after {after or 'TRIM_HORIZON'}: "
                                    f"{type(exc).__name__}: {exc}")
                    failed.add(shard_id)
                    break
                if not read.records:
                    break
                first, last = read.records[0]["SequenceNumber"], read.records[-1]["SequenceNumber"]
                try:
                    result = drain_range(kinesis=kinesis, stream=stream, shard_id=shard_id, first_sequence=first,
                                         last_sequence=last, s3=s3, bucket=bucket, dynamodb=dynamodb, table=table,
                                         engine=engine, copy_iam_role=resources["warehouse"].copy_iam_role)
                except Exception as exc:  # noqa: BLE001 - named, and the exit code says it
                    failures.append(f"{shard_id}: range {first}..{last} ({len(read.records)} records) not "
                                    f"delivered: {type(exc).__name__}: {exc}")
                    failed.add(shard_id)
                    click.echo(f"  {shard_id} {first}..{last}: NOT delivered: {type(exc).__name__}: {exc}")
                    break
                click.echo(f"  {shard_id} {first}..{last}: {result.records} records, {result.valid} valid, "
                           f"{result.rejected} rejected; lake {len(result.lake_objects)} object(s), "
                           f"DynamoDB {result.dynamodb_items} item(s), warehouse +{result.warehouse_inserted} row(s)")
                first_seen = first_seen or first
                last_seen = last
                for key, value in (("ranges", 1), ("records", result.records), ("valid", result.valid),
                                   ("rejected", result.rejected), ("inserted", result.warehouse_inserted)):
                    done[key] += value
                users |= result.users
                after = last
                if read.shard_end or read.caught_up:
                    break
            for key, value in done.items():
                totals[key] += value
            if done["ranges"]:
                click.echo(f"{shard_id}: {done['records']:,} records in {done['ranges']} range(s) "
                           f"{first_seen}..{last_seen}: {done['valid']:,} valid, {done['rejected']:,} rejected, "
                           f"warehouse +{done['inserted']:,} new row(s)")
            elif shard_id not in failed:
                click.echo(f"{shard_id}: nothing to drain")
        refreshed = _refresh_recommendations(engine, resources["dynamodb"], users)
    click.echo(f"drained {totals['records']:,} records in {totals['ranges']} range(s) from {len(shards)} shard(s): "
               f"{totals['valid']:,} valid (in the lake, DynamoDB and downloads_stream; +{totals['inserted']:,} "
               f"new warehouse rows, the rest were there already), {totals['rejected']:,} rejected "
               f"(dead letters under rejected/stream/){refreshed}")
    if failures:
        raise click.ClickException(f"{len(failures)} shard(s) not delivered: " + "; ".join(failures))


def _refresh_recommendations(engine, dynamodb_resource, users: set[int]) -> str:
    """As the drain runs do: fresh recommendations for the touched users; derived data, so a
    failure is said and does not fail the drain."""
    from appdata.analytics.recommend import refresh_user_recommendations

    if not users:
        return ""
    try:
        written = refresh_user_recommendations(engine, dynamodb_resource, sorted(users))
    except Exception as exc:  # noqa: BLE001
        return f"; recommendations NOT refreshed for {len(users)} user(s): {type(exc).__name__}: {exc}"
    return f"; {written:,} recommendation item(s) refreshed for {len(users)} user(s)"


def register(group: click.Group) -> None:
    """Add this concern's commands to the `appdata` group."""
    group.add_command(send)
    group.add_command(drain)
