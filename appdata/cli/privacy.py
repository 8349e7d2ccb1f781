"""`appdata forget`: a user's erasure, filed, carried out everywhere and proven, from the terminal."""

from __future__ import annotations

import getpass

import click


@click.command()
@click.argument("user_id", type=click.IntRange(min=1))
@click.option("--verify", "verify_only", is_flag=True,
              help="Only look: read every place and name each one still holding the user's data (exit 1 if any)")
@click.option("--by", "requested_by", default=None, help="Who files the request (default: this login)")
def forget(user_id: int, verify_only: bool, requested_by: str | None) -> None:
    """Forget USER_ID: from now on every door drops their events; their rows leave the lake table
    (and its old snapshots), the raw archive, landing and curated files, dead letters, DynamoDB,
    the warehouse and marts; the recommender is refitted. Prints what was removed where, then the
    proof. The request log keeps no personal data."""
    from appdata.config import Settings
    from appdata.defs.privacy import erasure_places
    from appdata.defs.resources import build_resources
    from appdata.privacy import log, requests

    settings = Settings.from_env()
    resources = build_resources(settings)
    with resources["warehouse"].connect() as engine:
        places = erasure_places(resources["s3"], resources["dynamodb"], resources["lake_table"], engine)
        if verify_only:
            left = requests.traces_of(user_id, places, None)
            for place, count in left.items():
                click.echo(f"  {place}: {count}")
            if left:
                raise click.ClickException(f"user {user_id}: data left in {len(left)} place(s)")
            click.echo(f"user {user_id}: no trace in any place")
            return
        request = log.file_request(places.s3, places.bucket, user_id, requested_by or getpass.getuser())
        click.echo(f"erasure request {request.request_id} filed: every door drops the user's events from now on")
        outcome = requests.carry_out(request.request_id, places)
    for place, count in outcome.removed.items():
        click.echo(f"  removed from {place}: {count}")
    if outcome.traces:
        raise click.ClickException(f"request {outcome.request_id}: data still in "
                                   + ", ".join(f"{p} ({n})" for p, n in outcome.traces.items()))
    click.echo(f"request {outcome.request_id} done: no trace left (Kinesis keeps the user's records until its "
               "retention ends; the drain drops them)")


def register(group: click.Group) -> None:
    group.add_command(forget)
