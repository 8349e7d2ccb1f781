"""`appdata` subcommands of the analytics concern."""

import click


def register(group: click.Group) -> None:
    """Add this concern's commands to the `appdata` group."""
