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

What Kinesis accepted is on disk before the answer leaves: a snapshot every few seconds would let
a SIGKILL take every record put since the last one, after their producer (the API) was told 200.
Each Kinesis record a request put is appended to `<state_dir>/kinesis.wal` (one JSON line per
record, with its sequence number and arrival time) and fsynced before the answer is sent; a start
replays the records the snapshot lacks, and each Kinesis snapshot empties the log. Other Kinesis
changes (create, delete, reshard: rare) write the Kinesis snapshot before their answer. A put
costs an append and an fsync, not a snapshot of every record the stream holds
(`bench/bench_emulator_durability.py` measures both).
"""

from __future__ import annotations

import base64
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
KINESIS_LOG_FILE = "kinesis.wal"
KINESIS_READS = ("Describe", "List", "Get", "SubscribeToShard")  # Kinesis actions that change nothing


def _kinesis_action(environ: dict) -> str:
    """The Kinesis action of a request (X-Amz-Target "Kinesis_20131202.PutRecords" -> "PutRecords")."""
    return environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]


def _record_entry(stream, shard_id: str, record) -> dict:
    """One put record as a line of the Kinesis log: where it is and all it holds."""
    data = record.data
    arrived = record.created_at
    return {"account": stream.account_id, "region": stream.region, "stream": stream.stream_name,
            "created": stream.creation_datetime.isoformat(), "shard": shard_id, "sequence": record.sequence_number,
            "partition_key": record.partition_key, "explicit_hash_key": record.explicit_hash_key,
            **({"data_b64": base64.b64encode(data).decode()} if isinstance(data, bytes) else {"data": data}),
            **({"arrived": arrived.isoformat()} if isinstance(arrived, datetime.datetime)
               else {"arrived_epoch": arrived})}


def _restore_record(stream, entry: dict) -> bool:
    """Put a logged record back into its shard unless the shard has it already (a snapshot taken
    after it was logged); True when it was added."""
    from moto.kinesis.models import Record

    shard = stream.shards.get(entry["shard"])
    if shard is None or (shard.records and next(reversed(shard.records)) >= entry["sequence"]):
        return False
    data = base64.b64decode(entry["data_b64"]) if "data_b64" in entry else entry["data"]
    record = Record(entry["partition_key"], data, entry["sequence"], entry["explicit_hash_key"])
    record.created_at = (datetime.datetime.fromisoformat(entry["arrived"]) if "arrived" in entry
                         else entry["arrived_epoch"])
    shard.records[entry["sequence"]] = record
    return True


class KinesisLog:
    """The write-ahead log of Kinesis puts (see the module doc): `logged()` wraps moto's
    Stream.put_record so each record put is queued as a line, `flush()` writes and fsyncs what the
    request put before its answer is sent, `replay()` restores what the snapshot lacks."""

    def __init__(self, path: Path):
        self.path = path
        self.queued: list[str] = []
        self._handle = None

    def logged(self, put_record):
        def put_record_logged(stream, partition_key, explicit_hash_key, data):
            sequence_number, shard_id = put_record(stream, partition_key, explicit_hash_key, data)
            record = stream.shards[shard_id].records[int(sequence_number)]
            self.queued.append(json.dumps(_record_entry(stream, shard_id, record)))
            return sequence_number, shard_id
        return put_record_logged

    def flush(self) -> None:
        if not self.queued:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "ab")
        self._handle.write(("\n".join(self.queued) + "\n").encode())
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.queued.clear()

    def empty(self) -> None:
        """The snapshot just written holds every logged record: start the log again."""
        if self._handle is not None:
            self._handle.truncate(0)
            os.fsync(self._handle.fileno())
        elif self.path.exists():
            self.path.write_bytes(b"")

    def replay(self, find_stream) -> str:
        """Restore the logged records the state lacks (`find_stream(entry)`: the entry's stream, or
        None when it is gone); a torn last line (a put whose answer never left) is cut off."""
        if not self.path.exists() or not self.path.stat().st_size:
            return "no puts to replay"
        data = self.path.read_bytes()
        added = present = orphaned = 0
        good = 0
        for line in data.splitlines(keepends=True):
            try:
                entry = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                entry = None
            if not isinstance(entry, dict):
                break
            good += len(line)
            stream = find_stream(entry)
            if stream is None:
                orphaned += 1
            elif _restore_record(stream, entry):
                added += 1
            else:
                present += 1
        note = f"{added} put(s) replayed from {self.path.name}, {present} already in the snapshot"
        if orphaned:
            note += f", {orphaned} of a stream that is gone (not restored)"
        if good < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(good)
                os.fsync(handle.fileno())
            note += f"; cut a torn tail of {len(data) - good} byte(s) (a put that was never answered)"
        return note


def _logged_stream(entry: dict):
    """The live stream a log entry was put into: same account, region, name and creation time."""
    from moto.backends import get_backend

    backends = get_backend("kinesis")
    if entry["account"] not in backends or entry["region"] not in backends[entry["account"]]:
        return None
    stream = backends[entry["account"]][entry["region"]].streams.get(entry["stream"])
    return stream if stream is not None and stream.creation_datetime.isoformat() == entry["created"] else None


def _kinesis_log_disagreement() -> str | None:
    """Put records into a throwaway stream through the logging wrapper, replay the lines into a
    second one and compare; what differs, or None. The log wraps moto internals (Stream.put_record,
    Record), so each start checks them against the installed moto."""
    from moto.kinesis.models import Stream

    try:
        log = KinesisLog(Path(os.devnull))
        first, second = (Stream("check", 2, None, None, "123456789012", "us-east-1") for _ in range(2))
        put = log.logged(Stream.put_record)
        for n in range(6):
            put(first, f"key-{n}", None, base64.b64encode(f"data-{n}".encode()).decode())
        for line in log.queued:
            _restore_record(second, json.loads(line))

        def seen(stream):
            return {shard_id: [(r.sequence_number, r.partition_key, r.data, r.explicit_hash_key, r.created_at)
                               for r in shard.records.values()] for shard_id, shard in stream.shards.items()}

        if len(log.queued) != 6 or seen(first) != seen(second):
            return f"logged {len(log.queued)} of 6 puts; put {seen(first)!r}, replayed {seen(second)!r}"
    except Exception as exc:  # noqa: BLE001 - any failure means: no log with this moto
        return f"{type(exc).__name__}: {exc}"
    return None


class EmulatorState:
    """The persisted backends of one process: load once on start, snapshot when changed; with
    Kinesis among them, every Kinesis change is on disk before its answer (see the module doc)."""

    def __init__(self, state_dir: Path, services: tuple[str, ...]):
        self.paths = {service: Path(state_dir) / f"{service}.pickle"
                      for service in services if service in PIPELINE_SERVICES}
        self.dirty = False
        self._last_snapshot = 0.0
        self._interval = MIN_SNAPSHOT_INTERVAL
        self.kinesis_log: KinesisLog | None = None
        self.durability_note: str | None = None
        if "kinesis" in self.paths:
            problem = _kinesis_log_disagreement()
            if problem is None:
                self.kinesis_log = KinesisLog(Path(state_dir) / KINESIS_LOG_FILE)
                self.durability_note = "Kinesis puts logged and fsynced before each answer"
            else:
                self.durability_note = (f"Kinesis snapshot written before each answer that changed it (slower: the "
                                     f"put log disagrees with moto {importlib.metadata.version('moto')}: {problem})")

    def start_logging(self) -> None:
        """Route moto's Kinesis puts through the log (this process serves Kinesis from now on)."""
        from moto.kinesis.models import Stream

        if self.kinesis_log is not None:
            Stream.put_record = self.kinesis_log.logged(Stream.put_record)

    def load(self) -> str:
        """Restore each backend from its snapshot (Kinesis: and its log); returns what happened,
        for the start-up line."""
        notes = []
        for service, path in self.paths.items():
            note = self._load(service, path)
            if service == "kinesis" and self.kinesis_log is not None:
                note = f"{note}; {self.kinesis_log.replay(_logged_stream)}"
            notes.append(f"{service}: {note}")
        return "; ".join(notes)

    def answered(self, service: str, environ: dict) -> None:
        """A request was served and its answer not yet sent: Kinesis changes go to disk now."""
        if service != "kinesis" or "kinesis" not in self.paths:
            return
        action = _kinesis_action(environ)
        if action.startswith(KINESIS_READS):
            return
        if self.kinesis_log is not None and action in ("PutRecord", "PutRecords"):
            self.kinesis_log.flush()
        else:
            self.snapshot(("kinesis",))

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

    def snapshot(self, services: tuple[str, ...] | None = None) -> None:
        """Write the snapshot of `services` (default: every one this process persists)."""
        from moto.backends import get_backend

        started = time.monotonic()
        for service in services or tuple(self.paths):
            path = self.paths[service]
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as handle:
                pickle.dump(dict(get_backend(service)), handle, protocol=pickle.HIGHEST_PROTOCOL)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            if service == "kinesis" and self.kinesis_log is not None:
                _fsync_directory(path.parent)  # the new snapshot is durable before the log it replaces goes
                self.kinesis_log.empty()
        if services is None:
            self.dirty = False
            self._last_snapshot = time.monotonic()
            self._interval = max(MIN_SNAPSHOT_INTERVAL, 10 * (self._last_snapshot - started))

    def snapshot_if_due(self) -> None:
        if self.dirty and time.monotonic() - self._last_snapshot >= self._interval:
            self.snapshot()


def _fsync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


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
    if state is not None and state.durability_note is not None:
        state.start_logging()
        note = f"{note}; {state.durability_note}"
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
            if state is None:
                return backend_app(environ, start_response)
            if environ.get("REQUEST_METHOD") not in READ_ONLY_METHODS:
                state.dirty = True  # Kinesis and DynamoDB POST reads too: a spare snapshot, never a lost one
            answer = backend_app(environ, start_response)  # whole; werkzeug sends nothing before it returns
            state.answered(backend_app.service, environ)
            return answer

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
