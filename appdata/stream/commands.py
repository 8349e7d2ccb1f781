"""`appdata` subcommands of the stream concern."""

import click


def register(group: click.Group) -> None:
    """Add this concern's commands to the `appdata` group."""
