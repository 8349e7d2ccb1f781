"""The `appdata` command: catalog here; send, drain, api, rejected, reconcile and deploy commands
in this package; the local stack plugs in its own (up, emulator, provision, demos)
through the `appdata.commands` entry point.
"""

from __future__ import annotations

import json

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="appdata")
def main() -> None:
    """appdata: stream and batch pipeline for app-download analytics."""


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def catalog(path: str, as_json: bool) -> None:
    """Print the cleaning report of a Play Store catalogue CSV (touches no AWS)."""
    from appdata.sources.catalogue import CatalogueError, clean_catalogue, read_raw_catalogue

    try:
        _, report = clean_catalogue(read_raw_catalogue(path))
    except CatalogueError as exc:
        raise click.ClickException(str(exc)) from exc
    data = report.as_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"catalogue: {path}")
    for key, value in data.items():
        if key in ("rules", "quarantined", "repaired"):
            continue
        click.echo(f"  {key:32s} {value}")
    for item in data["repaired"]:
        click.echo(f"  repaired line {item['line']}: {item['app']!r}: {item['reason']}")
    for item in data["quarantined"]:
        click.echo(f"  quarantined line {item['line']}: {item['app']!r}: {item['reason']}")


def _register_commands() -> None:
    """Each area adds its own subcommands; the local stack's (up, emulator, demo, ...) arrive
    through the `appdata.commands` entry point group, so nothing here imports the local stack."""
    from importlib.metadata import entry_points

    from appdata.cli import api, infra, lake, privacy, reliability, stream

    for module in (api, stream, lake, privacy, reliability, infra):
        module.register(main)
    for entry in entry_points(group="appdata.commands"):
        entry.load()(main)


_register_commands()
