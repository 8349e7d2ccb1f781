"""`appdata` commands of the local stack: emulator, provision, up, and the demos.

Registered through the `appdata.commands` entry point (pyproject.toml), so the pipeline's own
CLI never imports the local stack.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import click

from appdata.config import Settings
from appdata.local.environment import local_environment


# Tests only: `service:Operation[,...]` the emulator processes fail on purpose (inherited by the
# processes `appdata up` and `appdata emulator` start, so a whole stack can be run against a broken
# Kinesis, as the one a moto upgrade once gave: every GetRecords answered 500).
FAULT_VARIABLE = "APPDATA_EMULATOR_FAIL"


class InjectedFault(RuntimeError):
    """What a failing operation raises inside the emulator (werkzeug logs it and answers 500)."""


class FailingOperations:
    """WSGI middleware: requests for the chosen operations raise inside the server, like a moto bug."""

    def __init__(self, app, operations: set[str]):
        self.app, self.operations = app, operations

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")  # Kinesis, DynamoDB: "Kinesis_20131202.GetRecords"
        operation = target.rsplit(".", 1)[-1] if target else ""
        if operation in self.operations:
            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            raise InjectedFault(f"{operation} fails on purpose ({FAULT_VARIABLE})")
        return self.app(environ, start_response)


def _faults(spec: str | None, services: tuple[str, ...]) -> set[str]:
    """The operations of `spec` (service:Operation, ...) that belong to the services served here."""
    chosen = set()
    for item in (spec or "").split(","):
        service, _, operation = item.strip().partition(":")
        if operation and service in services:
            chosen.add(operation)
    return chosen


def register(main: click.Group) -> None:
    """Add the local stack's commands to the `appdata` group."""
    from appdata.local import batch_commands, demo

    for command in (emulator, provision, up):
        main.add_command(command)
    batch_commands.register(main)
    demo.register(main)


@click.command()
@click.option("--port", type=int, default=None,
              help="Base port: the other services there, S3, Kinesis and DynamoDB on the next three "
                   "(default: the endpoints the configuration gives).")
@click.option("--log-requests", is_flag=True, help="Log one line per request.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep S3, Kinesis and DynamoDB across restarts in this directory (default: memory only).")
@click.option("--serve", default=None, hidden=True,
              help="Serve these services (comma separated) in this process, on --host:--port.")
@click.option("--host", default="127.0.0.1", hidden=True)
@click.option("--fail", "fail", default=None, hidden=True, envvar=FAULT_VARIABLE,
              help="Tests only: raise inside the server on these operations (service:Operation, comma "
                   "separated), so werkzeug answers 500 with a traceback in the log, as a broken moto does.")
def emulator(port: int | None, log_requests: bool, state_dir: Path | None, serve: str | None, host: str,
             fail: str | None) -> None:
    """Serve S3, Kinesis and DynamoDB locally, each in a process of its own (moto, one request at a time)."""
    from appdata.config import AwsEndpoints
    from appdata.local.emulator import ALL_SERVICES, emulator_layout, make_emulator, serve_layout, \
        serve_until_signalled

    if serve is None:
        endpoints = Settings.from_env().aws_endpoints if port is None else AwsEndpoints.emulator(port)
        servers = emulator_layout(endpoints)
        if not servers:
            raise click.ClickException("no endpoint is on this machine: nothing to emulate (empty = real AWS)")
        code = serve_layout(servers, state_dir=state_dir, log_requests=log_requests)
        sys.stdout.flush()
        os._exit(code)  # its processes are gone; the interpreter's teardown costs seconds on a busy machine
    services = tuple(serve.split(","))
    if set(services) - set(ALL_SERVICES) or port is None:
        raise click.UsageError(f"--serve takes {','.join(ALL_SERVICES)} and needs --port")
    server = make_emulator(host, port, services=services, log_requests=log_requests, state_dir=state_dir)
    faults = _faults(fail, services)
    if faults:
        server.app = FailingOperations(server.app, faults)
    click.echo(f"AWS emulator for {', '.join(services)} listening on http://{host}:{server.server_port} "
               f"({server.state_note}" + (f"; FAILING {', '.join(sorted(faults))} on purpose ({FAULT_VARIABLE})"
                                          if faults else "") + ")")
    sys.stdout.flush()
    serve_until_signalled(server)  # returns once the snapshot is written
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip the interpreter's teardown of moto: seconds on a busy machine, inside a stop's budget


@click.command()
@click.option("--shards", type=int, default=1, show_default=True, help="Kinesis shards when creating the stream.")
def provision(shards: int) -> None:
    """Create bucket, stream, table and warehouse schema (idempotent; real AWS included)."""
    from appdata.local.provision import provision as run_provision
    from appdata.defs.resources import build_resources

    settings = Settings.from_env()
    report = run_provision(build_resources(settings), shards=shards)
    where = {service: url or f"AWS ({settings.aws_region})"
             for service, url in settings.aws_endpoints.by_service().items() if service != "others"}
    click.echo("provisioned against " + ", ".join(f"{service} {url}" for service, url in where.items()) + ":")
    for what, state in report.items():
        click.echo(f"  {what}: {state}")


@click.command()
@click.option("--dagster-port", type=int, default=3000, show_default=True)
@click.option("--no-ui", is_flag=True, help="Run emulator, provisioning and API only.")
@click.option("--verbose", is_flag=True,
              help="Every line of every process (default: run ends and each distinct problem once).")
def up(dagster_port: int, no_ui: bool, verbose: bool) -> None:
    """Bring up the local stack: emulator, provisioning, ingest API, Dagster UI and daemon.

    State (emulator, warehouse, Dagster, client files) lives under APPDATA_HOME and survives a
    restart. Ctrl-C or SIGTERM stops everything; a process that dies on its own stops the
    rest and makes the exit code 1. Full logs are in APPDATA_HOME/logs/.
    """
    from appdata.local.emulator import emulator_layout, wait_until_up
    from appdata.local.instance import write_dagster_yaml, write_workspace_yaml
    from appdata.local.stack import RunWatcher, Stop, Supervisor, held_ports, python, raise_stop_on_signals, \
        stop_leftovers

    settings = Settings.from_env()
    pid_file = settings.home / "up.pids"
    try:
        for line in stop_leftovers(pid_file):
            click.echo(line)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    held = held_ports(_listen_addresses(settings, None if no_ui else dagster_port))
    if held:
        raise click.ClickException("\n".join(held))
    env = local_environment(settings)
    write_dagster_yaml(settings)
    workspace = write_workspace_yaml(settings)
    # Run ends (and their failing checks) from the Dagster instance, one line each.
    runs = None if no_ui else RunWatcher(settings.dagster_home, click.echo)
    stack = Supervisor(env, settings.home / "logs", verbose=verbose, echo=click.echo, runs=runs, pid_file=pid_file)
    raise_stop_on_signals()
    failed: str | None = None
    try:
        if settings.uses_emulator:
            stack.start("emulator", python("-m", "appdata.cli", "emulator", "--state-dir", str(settings.home / "emulator")))
            for server in emulator_layout(settings.aws_endpoints):
                wait_until_up(server.endpoint)
        stack.run("provision", python("-m", "appdata.cli", "provision"))
        if runs is not None:
            runs.start()
        _prepare_stream_client_data(settings, stack)
        stack.start("api", python("-m", "appdata.cli", "api"))
        if not no_ui:
            stack.start("dagster", python("-m", "dagster", "dev", "-w", str(workspace),
                                          "-h", "127.0.0.1", "-p", str(dagster_port)))
            click.echo(f"Dagster UI: http://127.0.0.1:{dagster_port}")
        click.echo(f"Ingest API: {settings.api_url} (x-api-key in {settings.api_key_file} or APPDATA_API_KEYS)")
        click.echo(f"Logs: {settings.home / 'logs'}/ (this terminal shows each run's end and each distinct "
                   "problem once; --verbose for every line)")
        click.echo("Press Ctrl-C to stop everything.")
        while True:
            dead = stack.died()
            if dead is not None:
                failed = f"{dead.name} exited on its own with code {dead.proc.returncode}; stopping the rest"
                break
            time.sleep(0.5)
    except Stop as signal_name:
        click.echo(f"{signal_name}: stopping...")
    except RuntimeError as exc:
        failed = str(exc)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon the children
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        stack.release()
        if runs is not None:
            runs.close()
    if failed:
        click.echo(f"Error: {failed}", err=True)
    else:
        click.echo("stopped.")
    # Every child is gone and every log closed: skip the interpreter's teardown of Dagster's modules
    # (seconds on a busy machine, on top of the stop's budget, which `docker stop` would cut short).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if failed else 0)


def _listen_addresses(settings: Settings, dagster_port: int | None) -> list[tuple[str, str, int, str]]:
    """(what, host, port, how to move it) of every port `appdata up` listens on."""
    from appdata.config import ENDPOINT_VARIABLE, EMULATOR_PORT_OFFSETS, endpoint_variable
    from appdata.local.emulator import emulator_layout

    wanted = []
    for server in emulator_layout(settings.aws_endpoints) if settings.uses_emulator else []:
        variables = [endpoint_variable(s) if s in EMULATOR_PORT_OFFSETS else ENDPOINT_VARIABLE for s in server.services]
        wanted.append((f"AWS emulator: {', '.join(server.services)}", server.host, server.port,
                       f"set {' / '.join(variables)} to another port"))
    wanted.append(("ingest API", settings.api_host, settings.api_port, "set APPDATA_API_PORT to another port"))
    if dagster_port is not None:
        wanted.append(("Dagster UI", "127.0.0.1", dagster_port, "pass --dagster-port with another port"))
    return wanted


STREAM_CLIENT_ASSETS = "playstore_apps_raw,playstore_apps,users_stream,users_app_stream_client_data"


def _prepare_stream_client_data(settings: Settings, stack) -> None:
    """First start: materialize the stream client's data through Dagster (so the UI shows the
    sources with their metadata), letting the every-minute client schedule post it right away."""
    from appdata.sources.client_files import stream_csv_path
    from appdata.local.stack import python

    if stream_csv_path(settings.client_dir).exists():
        return
    click.echo("first start: materializing the sources the stream client posts from ...")
    stack.run("first-materialization", python("-m", "dagster", "asset", "materialize", "-m", "appdata.definitions",
                                               "--select", STREAM_CLIENT_ASSETS))




