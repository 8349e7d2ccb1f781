"""Local AWS on loopback: moto's server serving S3, Kinesis, DynamoDB (and CloudFormation).

It serves ONE request at a time. We measured moto's default threaded server losing concurrent
Kinesis writes (8 producers x 1,000 records: about 7,940 stored, duplicate sequence numbers);
moto's backends are not thread-safe, and a single-threaded server stored all 8,000 at the same
speed. Werkzeug's non-threaded server also speaks HTTP/1.0, so one idle keep-alive client can
never block the others.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Iterator

from werkzeug.serving import BaseWSGIServer, make_server


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def make_emulator(host: str = "127.0.0.1", port: int = 4566, *, log_requests: bool = False) -> BaseWSGIServer:
    """A single-threaded moto server bound to host:port (not yet serving)."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    class Handler(MotoRequestHandler):
        def log_request(self, *args, **kwargs):  # one line per request drowns `appdata up`
            if log_requests:
                super().log_request(*args, **kwargs)

    app = DomainDispatcherApplication(create_backend_app)
    return make_server(host, port, app, threaded=False, processes=1, request_handler=Handler)


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
def emulator_process(port: int | None = None) -> Iterator[str]:
    """`appdata emulator` in its own process on loopback (a free port by default), stopped on exit.

    A process of its own keeps moto off the caller's GIL: what tests and benchmarks measure
    is then our code against a server, as in production.
    """
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "appdata.cli", "emulator", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(endpoint)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
