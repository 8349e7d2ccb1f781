"""`appdata` subcommands of the stream concern: `appdata send`."""

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
    from appdata.sources.assets import client_stream_path
    from appdata.stream.client import ApiUnavailable, api_key, load_client_records, send_records

    settings = Settings.from_env()
    path = csv_path or client_stream_path(settings.client_dir)
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


def register(group: click.Group) -> None:
    """Add this concern's commands to the `appdata` group."""
    group.add_command(send)
