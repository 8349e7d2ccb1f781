"""`appdata` subcommands of the batch concern."""

import datetime as dt

import click

from appdata.cli.reliability import day_option


def register(group: click.Group) -> None:
    """Add this concern's commands to the `appdata` group."""

    @group.command("batch-demo")
    @click.option("--start", default="2020-03-01", show_default=True, metavar="YYYY-MM-DD", callback=day_option,
                  help="First day.")
    @click.option("--days", "count", type=click.IntRange(1, 366), default=3, show_default=True, help="Number of days.")
    @click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
    def batch_demo(start: str, count: int, as_json: bool) -> None:
        """Backfill a few days of the batch path as one run and print rows per stage.

        Runs against the current configuration (emulator or AWS, embedded DuckDB or the configured
        warehouse); exits 1 when client, landing, curated + rejected and warehouse disagree.
        """
        from appdata.local.batch_demo import format_table, reconcile, run_batch_demo, to_json
        from appdata.config import Settings

        first = dt.date.fromisoformat(start)
        days = [first + dt.timedelta(days=i) for i in range(count)]
        table = run_batch_demo(Settings.from_env(), days)
        click.echo(to_json(table) if as_json else format_table(table))
        problems = reconcile(table)
        for problem in problems:
            click.echo(f"does not reconcile: {problem}", err=True)
        if problems:
            raise SystemExit(1)
        click.echo("batch stages reconcile", err=True)
