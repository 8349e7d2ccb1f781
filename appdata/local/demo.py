"""`appdata demo`: both paths end to end on the current configuration, reconciled, with headlines.

Batch: a week of 2020 backfilled as one run (client -> landing -> curated/rejected -> warehouse).
Stream: events POSTed through the ingest API (some invalid, some repeated), drained from Kinesis
into the lake, DynamoDB and the warehouse. Analytics: marts, recommendations and the report.
It starts whatever local piece is not already running (emulator, API) and stops what it started,
so it works alone or beside `appdata up`. Exit code 0 only when every stage reconciles.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import time
from typing import Any, Iterator

import click

from appdata.config import Settings

DEFAULT_DAYS = tuple(dt.date(2020, 3, 1) + dt.timedelta(days=i) for i in range(7))


@contextlib.contextmanager
def local_emulator(settings: Settings) -> Iterator[str]:
    """The emulator at the configured loopback endpoints, each process started here if nobody serves
    its endpoint; yields where AWS is, for the headline."""
    from appdata.local.emulator import emulator_layout, running_emulators, wait_until_up

    servers = emulator_layout(settings.aws_endpoints)
    missing = []
    for server in servers:
        try:
            wait_until_up(server.endpoint, timeout=1.0)
        except RuntimeError:
            missing.append(server)
    with running_emulators(missing):
        yield ", ".join(f"{service} {url or 'AWS'}" for service, url in settings.aws_endpoints.by_service().items())


@contextlib.contextmanager
def local_api(settings: Settings) -> Iterator[str]:
    """The ingest API at APPDATA_API_URL, served here in a thread if nothing answers there."""
    import uvicorn

    from appdata.api.app import create_app
    from appdata.stream.client import api_is_up

    if api_is_up(settings.api_url):
        yield settings.api_url
        return
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.api_host,
                                           port=settings.api_port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="ingest-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise click.ClickException(f"could not start the ingest API on {settings.api_url}")
        time.sleep(0.05)
    try:
        yield settings.api_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _print_mapping(title: str, values: dict[str, Any]) -> None:
    click.echo(title)
    width = max(len(k) for k in values) if values else 0
    for key, value in values.items():
        if isinstance(value, (list, set, tuple)) and len(value) > 8:
            value = f"{len(value)} items"
        click.echo(f"  {key.ljust(width)}  {value}")


def run_reconciliation_checks(settings: Settings) -> bool:
    """Run `reconciliation_job` (the same asset checks the UI shows) and print each verdict."""
    from appdata.local.instance import local_instance
    from appdata.definitions import build_definitions

    job = build_definitions().resolve_job_def("reconciliation_job")
    with local_instance(settings) as instance:
        result = job.execute_in_process(instance=instance, tags={"appdata/demo": "reconciliation"},
                                        raise_on_error=False)
    evaluations = result.get_asset_check_evaluations()
    for evaluation in evaluations:
        verdict = "green" if evaluation.passed else "RED"
        description = evaluation.description or ""
        click.echo(f"  {evaluation.check_name}: {verdict}  {description[:300]}")
    return result.success and bool(evaluations) and all(e.passed for e in evaluations)


def run_demo(*, days: tuple[dt.date, ...] = DEFAULT_DAYS, events: int = 5_000, invalid: int = 200,
             repeated: int = 500) -> bool:
    """Run all three parts, print what each stage holds; True when everything reconciles."""
    from appdata.local.analytics_demo import run_analytics_demo
    from appdata.local.batch_demo import format_table, reconcile, run_batch_demo
    from appdata.local.environment import local_environment
    from appdata.local.instance import write_dagster_yaml
    from appdata.local.provision import provision
    from appdata.defs.resources import build_resources
    from appdata.local.stream_demo import run_stream_demo

    settings = Settings.from_env()
    os.environ.update({k: v for k, v in local_environment(settings).items() if k.startswith(("APPDATA_", "DAGSTER_"))})
    settings = Settings.from_env()
    write_dagster_yaml(settings)
    ok = True
    with local_emulator(settings) as endpoint:
        click.echo(f"AWS: {endpoint}; warehouse: {settings.warehouse_url}")
        provision(build_resources(settings))

        click.echo(f"\n== batch: {days[0]}..{days[-1]} as one backfill run ==")
        table = run_batch_demo(settings, list(days))
        click.echo(format_table(table))
        problems = reconcile(table)
        for problem in problems:
            click.echo(f"  NOT RECONCILED: {problem}")
        ok &= not problems

        click.echo(f"\n== stream: {events} events ({invalid} invalid, {repeated} posted twice) ==")
        with local_api(settings) as api_url:
            report = run_stream_demo(settings, n_events=events, invalid=invalid, repeated=repeated,
                                     via_api=True, api_url=api_url, progress=False)
        report.pop("users_touched", None)
        _print_mapping("stream stages:", report)
        ok &= bool(report.get("reconciled"))

        click.echo("\n== analytics: marts, recommendations, report ==")
        headline = run_analytics_demo(settings)
        _print_mapping("analytics:", headline)
        if not headline.get("beats_baseline"):  # an evaluation, not a reconciliation: reported, not fatal
            click.echo("  note: the recommender did not beat the most-popular baseline on this little data")
        marts_empty = [k for k, v in headline.items() if k.startswith("rows_mart") and not v]
        for name in marts_empty:
            click.echo(f"  EMPTY MART: {name}")
        ok &= not marts_empty

        click.echo("\n== reconciliation checks (by event id, every day in the sinks) ==")
        ok &= run_reconciliation_checks(settings)

    click.echo("\n" + ("all stages reconcile" if ok else "RECONCILIATION FAILED (see above)"))
    return ok


def register(group: click.Group) -> None:
    @group.command()
    @click.option("--events", type=int, default=5_000, show_default=True, help="Stream events to send.")
    @click.option("--invalid", type=int, default=200, show_default=True, help="Of which invalid.")
    @click.option("--repeated", type=int, default=500, show_default=True, help="Valid events posted twice.")
    @click.option("--days", type=int, default=7, show_default=True, help="Batch days from 2020-03-01.")
    def demo(events: int, invalid: int, repeated: int, days: int) -> None:
        """Backfill a week of batch, stream events through the API, build analytics; reconcile all."""
        from appdata.cli.reliability import exit_on_aws_errors
        from appdata.stream.client import ApiError

        chosen = tuple(dt.date(2020, 3, 1) + dt.timedelta(days=i) for i in range(days))
        try:
            with exit_on_aws_errors("demo"):  # one line naming the call, not a traceback
                ok = run_demo(days=chosen, events=events, invalid=invalid, repeated=repeated)
        except ApiError as exc:  # the ingest API down, failing, or another stack's (its key refused)
            raise click.ClickException(f"demo stopped: {exc}") from None
        if not ok:
            raise SystemExit(1)
