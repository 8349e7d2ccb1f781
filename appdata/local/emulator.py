"""Local AWS on loopback: moto servers, one process per service the pipeline calls.

S3, Kinesis and DynamoDB each get a process of their own, at the endpoint the configuration
gives that service (`appdata.config.AwsEndpoints`), so a producer writing to Kinesis and a drain
writing to DynamoDB and S3 no longer queue behind each other on one core. Every other service
(CloudFormation, Secrets Manager) is served by one more process, at APPDATA_AWS_ENDPOINT_URL.
Each process refuses the requests of services it does not serve (421, naming the variable), so a
client pointed at the wrong endpoint fails loudly instead of writing into a backend nobody reads.
One process per distinct endpoint: configure every service at one URL (APPDATA_AWS_ENDPOINT_URL
alone) and one process serves them all. That is what deploying `infra/appdata.yaml` into the
emulator needs: moto's CloudFormation creates the stack's bucket, stream and table in the
backends of its own process, which must then be the process the pipeline's clients reach.

Each process serves ONE request at a time. We measured moto's default threaded server losing
concurrent Kinesis writes (8 producers x 1,000 records: about 7,940 stored, duplicate sequence
numbers); moto's backends are not thread-safe, and a single-threaded server stored all 8,000 at
the same speed. Werkzeug's non-threaded server also speaks HTTP/1.0, so one idle keep-alive
client can never block the others.

With a state directory the emulator is persistent: moto keeps everything in memory, so each
process pickles the backend of each pipeline service it serves to `<state_dir>/<service>.pickle`
between requests (at most every few seconds while requests change things, and on shutdown) and
loads it on start. The snapshot is taken in the serving thread between two requests, so it is a
consistent picture of that service; it is written to a temporary file and renamed.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime
import importlib.metadata
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse
from xml.sax.saxutils import escape

import click

try:
    import moto  # noqa: F401 - here only to say what is missing, once
    from werkzeug.serving import BaseWSGIServer, make_server
except ModuleNotFoundError as missing:  # a production install (requirements/production.txt)
    raise click.ClickException(
        f"the local AWS emulator needs moto ({missing.name} is not installed): production installs leave it "
        "out; install requirements/local.txt (or the project's `local` extra)") from missing

from appdata.config import EMULATOR_PORT_OFFSETS, ENDPOINT_VARIABLE, AwsEndpoints, endpoint_variable, \
    is_loopback_endpoint

PIPELINE_SERVICES = tuple(EMULATOR_PORT_OFFSETS)  # persisted, each in its own file
OTHERS = "others"  # every service that is not one of PIPELINE_SERVICES
ALL_SERVICES = (*PIPELINE_SERVICES, OTHERS)
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MIN_SNAPSHOT_INTERVAL = 2.0  # seconds; stretched to 10x the last snapshot's duration for big states


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class EmulatorServer:
    """One emulator process: where it listens and the services it serves (among ALL_SERVICES)."""

    host: str
    port: int
    services: tuple[str, ...]

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self, state_dir: Path | None = None, log_requests: bool = False) -> list[str]:
        args = [sys.executable, "-m", "appdata.cli", "emulator", "--serve", ",".join(self.services),
                "--host", self.host, "--port", str(self.port)]
        if state_dir is not None:
            args += ["--state-dir", str(state_dir)]
        return args + (["--log-requests"] if log_requests else [])


def emulator_layout(endpoints: AwsEndpoints) -> list[EmulatorServer]:
    """The processes that serve `endpoints` locally: one per distinct loopback endpoint, serving
    the services configured there (endpoints elsewhere, real AWS included, are not ours to serve)."""
    grouped: dict[tuple[str, int], list[str]] = {}
    for service, url in endpoints.by_service().items():
        if is_loopback_endpoint(url):
            parsed = urlparse(url)
            grouped.setdefault((parsed.hostname, parsed.port or 80), []).append(service)
    return [EmulatorServer(host, port, tuple(services)) for (host, port), services in grouped.items()]


def free_endpoints(*, single_process: bool = False) -> AwsEndpoints:
    """Endpoints on free loopback ports: one per service, or one for all (`single_process`)."""
    if single_process:
        return AwsEndpoints.everything_at(f"http://127.0.0.1:{free_port()}")
    urls = {service: f"http://127.0.0.1:{free_port()}" for service in ALL_SERVICES}
    return AwsEndpoints(**urls)


def _serves(services: tuple[str, ...], backend: str) -> bool:
    """Whether a process serving `services` answers a request moto routes to `backend`."""
    if backend == "moto_api":
        return True
    return backend in services or (OTHERS in services and backend not in PIPELINE_SERVICES)


def _misdirected(environ: dict, start_response, services: tuple[str, ...], backend: str) -> list[bytes]:
    """421 with an AWS error body (JSON for the JSON protocols, XML otherwise) naming the variable
    that should point this client elsewhere, so botocore shows the message."""
    variable = endpoint_variable(backend) if backend in PIPELINE_SERVICES else ENDPOINT_VARIABLE
    served = ", ".join("every other service" if service == OTHERS else service for service in services)
    message = f"this emulator serves {served} only; {backend} is at the endpoint {variable} names"
    if environ.get("HTTP_X_AMZ_TARGET"):
        content_type, body = "application/x-amz-json-1.1", json.dumps({"__type": "MisdirectedRequest", "message": message})
    else:
        content_type = "text/xml"
        body = (f"<ErrorResponse><Error><Code>MisdirectedRequest</Code><Message>{escape(message)}</Message>"
                f"</Error></ErrorResponse>")
    # Read the request first: werkzeug drains what is left unread with a blocking read that
    # waits for the client, which waits for the end of the answer.
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    data = body.encode()
    start_response("421 Misdirected Request", [("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return [data]


COMBINED_STATE_FILE = "emulator-state.pickle"  # what the emulator kept before one process per service


class EmulatorState:
    """The persisted backends of one process: load once on start, snapshot when changed."""

    def __init__(self, state_dir: Path, services: tuple[str, ...]):
        self.paths = {service: Path(state_dir) / f"{service}.pickle"
                      for service in services if service in PIPELINE_SERVICES}
        self.dirty = False
        self._last_snapshot = 0.0
        self._interval = MIN_SNAPSHOT_INTERVAL

    def load(self) -> str:
        """Restore each backend from its snapshot; returns what happened, for the start-up line."""
        return "; ".join(f"{service}: {self._load(service, path)}" for service, path in self.paths.items())

    @staticmethod
    def _load(service: str, path: Path) -> str:
        from moto.backends import get_backend

        combined = path.parent / COMBINED_STATE_FILE
        if not path.exists() and combined.exists():
            return EmulatorState._load_combined(service, combined)
        if not path.exists():
            return f"new state at {path}"
        try:
            with open(path, "rb") as handle:
                accounts = pickle.load(handle)
            if not isinstance(accounts, dict):
                raise TypeError(f"it holds a {type(accounts).__name__}, not moto's accounts")
        except Exception as exc:  # noqa: BLE001 - a snapshot from another moto version, a torn file
            aside = path.with_suffix(f".unreadable-{int(time.time())}")
            os.replace(path, aside)
            return f"could not read {path} ({exc!r}); kept it as {aside.name} and started EMPTY"
        backend = get_backend(service)
        backend.clear()
        backend.update(accounts)
        return f"state restored from {path}"

    @staticmethod
    def _load_combined(service: str, combined: Path) -> str:
        """The state an older emulator kept for all services in one file: this service's part, so an
        upgrade keeps the stream, table and bucket (the next snapshot writes the service's own file)."""
        from moto.backends import get_backend

        try:
            with open(combined, "rb") as handle:
                accounts = pickle.load(handle)[service]
            if not isinstance(accounts, dict):
                raise TypeError(f"it holds a {type(accounts).__name__}, not moto's accounts")
        except Exception as exc:  # noqa: BLE001 - as for a service's own file: say it, start empty
            return f"could not read {service} from {combined} ({exc!r}); started EMPTY"
        backend = get_backend(service)
        backend.clear()
        backend.update(accounts)
        return f"state restored from {combined} (the single-process layout's file)"

    def snapshot(self) -> None:
        from moto.backends import get_backend

        started = time.monotonic()
        for service, path in self.paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as handle:
                pickle.dump(dict(get_backend(service)), handle, protocol=pickle.HIGHEST_PROTOCOL)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        self.dirty = False
        self._last_snapshot = time.monotonic()
        self._interval = max(MIN_SNAPSHOT_INTERVAL, 10 * (self._last_snapshot - started))

    def snapshot_if_due(self) -> None:
        if self.dirty and time.monotonic() - self._last_snapshot >= self._interval:
            self.snapshot()


def _seconds_between(newer, older) -> float:
    """Seconds from `older` to `newer`, two Kinesis records' `created_at`: a naive UTC datetime
    since moto 5.2.6, epoch seconds before (a state pickled by 5.2.5 holds the old kind)."""
    if type(newer) is type(older):
        delta = newer - older
        return delta.total_seconds() if isinstance(delta, datetime.timedelta) else delta

    def epoch(moment) -> float:
        if isinstance(moment, datetime.datetime):
            return moment.replace(tzinfo=moment.tzinfo or datetime.timezone.utc).timestamp()
        return float(moment)

    return epoch(newer) - epoch(older)


def _fast_get_records(shard, last_sequence_id, limit):
    """Shard.get_records by bisection over the shard's sequence numbers (see below)."""
    keys = shard.__dict__.setdefault("_sequence_numbers", [])
    if len(keys) > len(shard.records) or (keys and keys[-1] not in shard.records):
        keys.clear()  # records were removed (a resharding moved them): start again from the shard
    if len(keys) < len(shard.records):  # the newest, from the end of the (ordered) records
        keys.extend(reversed(list(islice(reversed(shard.records), len(shard.records) - len(keys)))))
    start = bisect.bisect_right(keys, int(last_sequence_id))
    chosen = keys[start:] if limit is None else keys[start:start + limit]
    if not chosen:
        return [], int(last_sequence_id), 0
    records = [shard.records[key] for key in chosen]
    behind = _seconds_between(shard.records[keys[-1]].created_at, records[-1].created_at)
    return records, chosen[-1], int(behind * 1000)


def _fast_max_sequence_number(shard) -> int:
    return next(reversed(shard.records)) if shard.records else 0


def _fast_min_sequence_number(shard) -> int:
    return next(iter(shard.records)) if shard.records else 0


def _disagreement_with_moto() -> str | None:
    """Replay a small shard through moto's own Shard methods and ours; what differs, or None.

    The speed-up replaces methods of moto's (private) Kinesis model, so every start checks it
    against the installed moto instead of trusting the version it was written for.
    """
    from moto.kinesis.models import Shard

    shard = Shard(0, 0, 2**128)
    try:
        for batch in range(2):
            for _ in range(12):
                shard.put_record("k", b"data", "1")
            pairs = [(_fast_max_sequence_number(shard), Shard.get_max_sequence_number(shard)),
                     (_fast_min_sequence_number(shard), Shard.get_min_sequence_number(shard))]
            for position in range(0, int(_fast_max_sequence_number(shard)) + 2):
                for limit in (None, 1, 5):
                    ours, theirs = _fast_get_records(shard, str(position), limit), \
                        Shard.get_records(shard, str(position), limit)
                    pairs.append((([r.sequence_number for r in ours[0]], ours[1], ours[2]),
                                  ([r.sequence_number for r in theirs[0]], theirs[1], theirs[2])))
            for ours, theirs in pairs:
                if ours != theirs:
                    return f"batch {batch}: ours {ours!r}, moto's {theirs!r}"
    except Exception as exc:  # noqa: BLE001 - any failure means: do not patch this moto
        return f"{type(exc).__name__}: {exc}"
    return None


def kinesis_shards_at_stream_scale() -> str:
    """Make moto's Kinesis shards cost what Kinesis's do per call, not in proportion to all they hold,
    when the installed moto gives the same answers as the faster methods; returns what was done,
    naming moto's version, for the start-up line.

    moto copies every sequence number of the shard into a list to find its newest (each record put)
    and its oldest, and walks every record from the first on each GetRecords: with 120,000
    records in a shard, its process spent 85% of a core and held a 1,000 records/s producer to
    594/s. Shards only ever append (increasing sequence numbers), so the ends are the ordered
    dict's ends, and a sorted list of sequence numbers, extended as records arrive, finds a read's
    position by bisection. These are moto internals (moto 5.2.6 changed a record's `created_at`
    from a float to a datetime, and the first version of this patch answered 500 on every read):
    a moto whose answers differ keeps its own, slower, methods, and the line says so.
    """
    from moto.kinesis.models import Shard

    version = importlib.metadata.version("moto")
    problem = _disagreement_with_moto()
    if problem is not None:
        return (f"moto {version}: Kinesis reads use moto's own (slower) code; the bisection speed-up "
                f"disagrees with this version ({problem})")
    Shard.get_records = _fast_get_records
    Shard.get_max_sequence_number = _fast_max_sequence_number
    Shard.get_min_sequence_number = _fast_min_sequence_number
    return f"moto {version}: Kinesis reads by bisection (checked against moto's own answers)"


def make_emulator(host: str = "127.0.0.1", port: int = 4566, *, services: tuple[str, ...] = ALL_SERVICES,
                  log_requests: bool = False, state_dir: Path | None = None) -> BaseWSGIServer:
    """A single-threaded moto server bound to host:port (not yet serving), answering `services` only.

    With `state_dir`, the pipeline services among them survive a restart (see the module doc);
    `server.state_note` says whether state was restored and how Kinesis reads are served.
    """
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    kinesis_note = kinesis_shards_at_stream_scale() if "kinesis" in services else None
    state = EmulatorState(state_dir, services) if state_dir is not None and set(services) & set(PIPELINE_SERVICES) \
        else None
    note = state.load() if state is not None else "in memory only"
    if kinesis_note is not None:
        note = f"{note}; {kinesis_note}"

    class Handler(MotoRequestHandler):
        def log_request(self, *args, **kwargs):  # one line per request drowns `appdata up`
            if log_requests:
                super().log_request(*args, **kwargs)

    class App(DomainDispatcherApplication):
        def __call__(self, environ, start_response):
            backend_app = self.get_application(environ)
            if not _serves(services, backend_app.service):
                return _misdirected(environ, start_response, services, backend_app.service)
            if state is not None and environ.get("REQUEST_METHOD") not in READ_ONLY_METHODS:
                state.dirty = True  # Kinesis and DynamoDB POST reads too: a spare snapshot, never a lost one
            return backend_app(environ, start_response)

    server = make_server(host, port, App(create_backend_app), threaded=False, processes=1, request_handler=Handler)
    if state is not None:
        # socketserver calls service_actions() between requests in serve_forever's thread.
        server.service_actions = state.snapshot_if_due
        original_close = server.server_close

        def close_with_snapshot() -> None:
            original_close()
            if state.dirty:
                state.snapshot()

        server.server_close = close_with_snapshot
    server.state_note = note
    return server


def serve_until_signalled(server: BaseWSGIServer) -> None:
    """Serve until SIGTERM or SIGINT, finishing the request in progress (never a half-applied
    request in the snapshot), then close (and snapshot)."""

    def request_shutdown(*_args) -> None:
        server._BaseServer__shutdown_request = True  # what shutdown() sets, without its wait

    signal.signal(signal.SIGTERM, request_shutdown)
    signal.signal(signal.SIGINT, request_shutdown)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def wait_until_up(endpoint: str, timeout: float = 30.0) -> None:
    """Block until the emulator answers HTTP, or raise with the endpoint in the message."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                return
        except Exception as exc:  # connection refused while it starts
            last = exc
            time.sleep(0.1)
    raise RuntimeError(f"AWS emulator at {endpoint} did not answer within {timeout:.0f}s: {last}")


def serve_layout(servers: list[EmulatorServer], *, state_dir: Path | None = None,
                 log_requests: bool = False) -> int:
    """`appdata emulator`: one process per server, until SIGTERM or SIGINT, which each of them gets
    (each finishes its request and snapshots; they are waited for). A server that exits on its own
    stops the others; the exit code is then 1."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_args: stop.set())
    procs = [subprocess.Popen(server.command(state_dir, log_requests)) for server in servers]
    died = None
    while died is None and not stop.wait(0.2):
        died = next((proc for proc in procs if proc.poll() is not None), None)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait()
    return 0 if died is None else 1


@contextlib.contextmanager
def running_emulators(servers: list[EmulatorServer], state_dir: Path | None = None) -> Iterator[None]:
    """`servers`, each in its own process, until the block ends (then stopped as SIGTERM stops them)."""
    procs: list[subprocess.Popen] = []
    try:
        for server in servers:
            procs.append(subprocess.Popen(server.command(state_dir), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        for server in servers:
            wait_until_up(server.endpoint)
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def emulator_process(*, single_process: bool = False, state_dir: Path | None = None) -> Iterator[AwsEndpoints]:
    """The emulator on free loopback ports, stopped on exit; yields the endpoints to configure
    (`endpoints.environment()` gives the variables).

    One process per service (what `appdata up` runs), or one serving every service
    (`single_process`: the previous shape, and what a CloudFormation deploy into it needs).
    Processes of their own keep moto off the caller's GIL: what tests and benchmarks measure
    is then our code against servers, as in production.
    """
    endpoints = free_endpoints(single_process=single_process)
    with running_emulators(emulator_layout(endpoints), state_dir):
        yield endpoints
