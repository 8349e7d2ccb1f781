"""`appdata reconcile` and `appdata demo` on a broken AWS end with one line naming the failed call
and exit 1, not a traceback: against a real emulator whose Kinesis answers 500 on every GetRecords
(its test-only switch APPDATA_EMULATOR_FAIL, which raises inside the server as the moto bug did),
and against an endpoint where nothing listens. Run as a user runs them: a subprocess each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appdata.config import AwsEndpoints, Settings
from appdata.defs.resources import build_resources
from appdata.local.commands import FAULT_VARIABLE
from appdata.local.emulator import emulator_process, free_port
from appdata.local.provision import provision
from appdata_tests.support.events import todays_event
from appdata_tests.support.stream import put

ONE_LINE_500 = ("an AWS call failed: ClientError: An error occurred (500) when calling the GetRecords operation "
                "(reached max retries: ")


@pytest.fixture(scope="module")
def broken_kinesis() -> AwsEndpoints:
    """Emulator processes of their own, Kinesis failing every GetRecords (PutRecords and the rest work)."""
    previous = os.environ.get(FAULT_VARIABLE)
    os.environ[FAULT_VARIABLE] = "kinesis:GetRecords"  # inherited by the emulator's processes only
    try:
        with emulator_process() as endpoints:
            os.environ.pop(FAULT_VARIABLE)
            yield endpoints
    finally:
        os.environ.pop(FAULT_VARIABLE, None)
        if previous is not None:
            os.environ[FAULT_VARIABLE] = previous


def _environment(home: Path, endpoints: AwsEndpoints) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("APPDATA_", "DAGSTER_", "AWS_"))}
    return {**keep, "APPDATA_HOME": str(home), **endpoints.environment(), "APPDATA_ENV_FILE": "",
            "APPDATA_API_PORT": str(free_port()), "APPDATA_API_KEYS": "aws-errors-key"}


def _appdata(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appdata.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _assert_one_line(out: subprocess.CompletedProcess, what: str, reason: str) -> None:
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stdout + out.stderr, out.stderr[-4000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: {what} stopped: {reason}"), out.stderr[-2000:]


@pytest.mark.emulator
def test_reconcile_on_a_kinesis_answering_500_is_one_line(tmp_path, broken_kinesis, monkeypatch):
    env = _environment(tmp_path / "home", broken_kinesis)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    resources = build_resources(Settings.from_env())
    provision(resources)
    put(resources["kinesis"].get_client(), resources["kinesis"].stream_name, [todays_event(i) for i in range(5)])
    out = _appdata(env, "reconcile", "--stream")
    _assert_one_line(out, "reconcile", ONE_LINE_500)


@pytest.mark.emulator
def test_demo_on_a_kinesis_answering_500_is_one_line(tmp_path, broken_kinesis):
    env = _environment(tmp_path / "home", broken_kinesis)
    out = _appdata(env, "demo", "--events", "40", "--invalid", "2", "--repeated", "4", "--days", "1")
    _assert_one_line(out, "demo", ONE_LINE_500)
    assert "== stream:" in out.stdout  # the batch part went through; the stream's drain met the broken read


def test_reconcile_with_nothing_listening_is_one_line(tmp_path):
    env = _environment(tmp_path / "home", AwsEndpoints.everything_at(f"http://127.0.0.1:{free_port()}"))
    env["AWS_MAX_ATTEMPTS"] = "1"  # botocore's own setting: no back-off between refused connections
    out = _appdata(env, "reconcile", "--batch", timeout=300)
    _assert_one_line(out, "reconcile",
                     "an AWS call failed: EndpointConnectionError: Could not connect to the endpoint URL")


@pytest.fixture()
def api_of_another_stack():
    """A real HTTP server on loopback answering every POST as an API that does not know our key."""
    import http.server
    import threading

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"detail":"x-api-key is not valid"}'
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_send_to_an_api_that_refuses_our_key_ends_on_one_line(api_of_another_stack, tmp_path):
    """Found by a hostile tester: another stack's API at the configured port refused the key and
    the command ended in a traceback (RuntimeError from deep in the client)."""
    csv = tmp_path / "client.csv"
    csv.write_text("event_id,user_id\nx,1\n")
    env = {**os.environ, "APPDATA_API_URL": api_of_another_stack, "APPDATA_API_KEYS": "ours",  # pragma: allowlist secret
           "APPDATA_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "appdata.cli", "send", str(csv)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line[line.index("Error: "):] for line in done.stderr.splitlines() if "Error: " in line]  # after tqdm's bar
    assert errors == [
        f"Error: API at {api_of_another_stack}/v1/downloads refused the batch: HTTP 403 "
        '{"detail":"x-api-key is not valid"}']
