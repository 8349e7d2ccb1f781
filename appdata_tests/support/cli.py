"""The `appdata` command as an operator runs it, in this process (click's runner)."""

from __future__ import annotations

from click.testing import CliRunner


def run_cli(*args: str, code: int = 0) -> str:
    """Run `appdata <args>`, assert its exit code, return what it printed."""
    from appdata.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output
