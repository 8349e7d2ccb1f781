"""Local AWS on loopback: moto's server serving S3, Kinesis, DynamoDB (and CloudFormation).

It serves ONE request at a time. We measured moto's default threaded server losing concurrent
Kinesis writes (8 producers x 1,000 records: about 7,940 stored, duplicate sequence numbers);
moto's backends are not thread-safe, and a single-threaded server stored all 8,000 at the same
speed. Werkzeug's non-threaded server also speaks HTTP/1.0, so one idle keep-alive client can
never block the others.

With a state directory the emulator is persistent: moto keeps everything in memory, so the
backends of the services the pipeline uses are pickled to `<state_dir>/emulator-state.pickle`
between requests (at most every few seconds while requests change things, and on shutdown)
and loaded on start. The snapshot is taken in the serving thread between two requests, so it
is always a consistent picture of all services; it is written to a temporary file and renamed.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from werkzeug.serving import BaseWSGIServer, make_server


PERSISTED_SERVICES = ("s3", "kinesis", "dynamodb")
STATE_FILE = "emulator-state.pickle"
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MIN_SNAPSHOT_INTERVAL = 2.0  # seconds; stretched to 10x the last snapshot's duration for big states


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmulatorState:
    """The persisted backends of one emulator: load once on start, snapshot when changed."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / STATE_FILE
        self.dirty = False
        self._last_snapshot = 0.0
        self._interval = MIN_SNAPSHOT_INTERVAL

    def load(self) -> str:
        """Restore the backends from the snapshot; returns what happened, for the start-up line."""
        from moto.backends import get_backend

        if not self.path.exists():
            return f"new state at {self.path}"
        try:
            with open(self.path, "rb") as handle:
                state = pickle.load(handle)
        except Exception as exc:  # noqa: BLE001 - a snapshot from another moto version, a torn file
            aside = self.path.with_suffix(f".unreadable-{int(time.time())}")
            os.replace(self.path, aside)
            return f"could not read {self.path} ({exc!r}); kept it as {aside.name} and started EMPTY"
        for service, accounts in state.items():
            backend = get_backend(service)
            backend.clear()
            backend.update(accounts)
        return f"state restored from {self.path}"

    def snapshot(self) -> None:
        from moto.backends import get_backend

        started = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {service: dict(get_backend(service)) for service in PERSISTED_SERVICES}
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        self.dirty = False
        self._last_snapshot = time.monotonic()
        self._interval = max(MIN_SNAPSHOT_INTERVAL, 10 * (self._last_snapshot - started))

    def snapshot_if_due(self) -> None:
        if self.dirty and time.monotonic() - self._last_snapshot >= self._interval:
            self.snapshot()


def make_emulator(host: str = "127.0.0.1", port: int = 4566, *, log_requests: bool = False,
                  state_dir: Path | None = None) -> BaseWSGIServer:
    """A single-threaded moto server bound to host:port (not yet serving).

    With `state_dir`, its S3, Kinesis and DynamoDB survive a restart (see the module doc);
    `server.state_note` says whether state was restored.
    """
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    state = EmulatorState(state_dir) if state_dir is not None else None
    note = state.load() if state is not None else "in memory only"

    class Handler(MotoRequestHandler):
        def log_request(self, *args, **kwargs):  # one line per request drowns `appdata up`
            if log_requests:
                super().log_request(*args, **kwargs)

    class App(DomainDispatcherApplication):
        def __call__(self, environ, start_response):
            if state is not None and environ.get("REQUEST_METHOD") not in READ_ONLY_METHODS:
                state.dirty = True  # Kinesis and DynamoDB POST reads too: a spare snapshot, never a lost one
            return super().__call__(environ, start_response)

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


class EmulatorThread:
    """The emulator in a background thread of this process (for `appdata up` and benchmarks)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 4566):
        self.server = make_emulator(host, port)
        self.endpoint = f"http://{host}:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="aws-emulator", daemon=True)

    def start(self) -> "EmulatorThread":
        self._thread.start()
        wait_until_up(self.endpoint)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self._thread.join(timeout=10)


@contextlib.contextmanager
def emulator_process(port: int | None = None, state_dir: Path | None = None) -> Iterator[str]:
    """`appdata emulator` in its own process on loopback (a free port by default), stopped on exit.

    A process of its own keeps moto off the caller's GIL: what tests and benchmarks measure
    is then our code against a server, as in production.
    """
    port = port or free_port()
    args = [sys.executable, "-m", "appdata.cli", "emulator", "--port", str(port)]
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(endpoint)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
