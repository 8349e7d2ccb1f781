"""`appdata up` as a user runs it: bring the whole stack up, post, stop it with SIGTERM (no
process left, ports free), bring it up again on the same APPDATA_HOME, post more, and find both
sets in the lake, DynamoDB, the warehouse and through GET. And a child that dies on its own
stops the rest with a non-zero exit. Every wait is a poll for a condition with a deadline."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx
import pytest
import sqlalchemy as sa

from appdata.local.emulator import free_endpoints, free_port
from appdata_tests.support.events import make_event

pytestmark = [pytest.mark.slow, pytest.mark.emulator]
TODAY = time.strftime("%Y-%m-%d", time.gmtime())


class Stack:
    def __init__(self, home: Path):
        self.home = home
        self.endpoints = free_endpoints()
        self.ports = {"api": free_port(), "dagster": free_port(),
                      **{service: int(url.rsplit(":", 1)[1]) for service, url in self.endpoints.by_service().items()}}
        self.key = "stack-test-key"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("APPDATA_", "DAGSTER_", "AWS_"))}
        self.env.update(APPDATA_HOME=str(home), **self.endpoints.environment(),
                        APPDATA_API_PORT=str(self.ports["api"]), APPDATA_API_KEYS=self.key,
                        APPDATA_BATCH_ROWS_PER_DAY="20")
        self.api = f"http://127.0.0.1:{self.ports['api']}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def up(self, *extra: str) -> None:
        self.starts += 1
        self.out = open(self.home.parent / f"up-{self.starts}.out", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "appdata.cli", "up", "--dagster-port",
                                      str(self.ports["dagster"]), *extra], env=self.env, stdout=self.out,
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: self._answers(f"{self.api}/healthz"), 300, "the API to answer", self)
        if "--no-ui" not in extra:
            wait_for(lambda: self._answers(f"http://127.0.0.1:{self.ports['dagster']}/server_info"), 300,
                     "the Dagster webserver to answer", self)

    def _answers(self, url: str) -> bool:
        assert self.proc.poll() is None, f"appdata up exited with {self.proc.returncode}: {self.output()}"
        try:
            return httpx.get(url, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def output(self) -> str:
        return (self.home.parent / f"up-{self.starts}.out").read_text()[-4000:]

    def post(self, records: list[dict]) -> list[str]:
        response = httpx.post(f"{self.api}/v1/downloads", json=records, headers={"x-api-key": self.key}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["event_ids"]

    def downloads(self, user_id: int) -> set[str]:
        response = httpx.get(f"{self.api}/v1/users/{user_id}/downloads", headers={"x-api-key": self.key},
                             params={"limit": 1000}, timeout=30)
        return {item["event_id"] for item in response.json().get("downloads", [])} if response.status_code == 200 else set()

    def aws(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoints.url(service), region_name="us-east-1",
                            aws_access_key_id="emulator", aws_secret_access_key="emulator")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=120)
        self.out.close()
        return code

    def leftovers(self) -> list[str]:
        """Processes still running with this stack's APPDATA_HOME in their environment."""
        marker = f"APPDATA_HOME={self.home}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"{entry.name}: {command[:200]}")
            except (FileNotFoundError, PermissionError, ProcessLookupError):
                continue
        return found

    def ports_free(self) -> bool:
        for port in self.ports.values():
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return False
        return True

    def warehouse_ids(self) -> set[str]:
        engine = sa.create_engine(f"duckdb:///{self.home / 'warehouse.duckdb'}")
        try:
            with engine.connect() as conn:
                return {r[0] for r in conn.exec_driver_sql("SELECT event_id FROM downloads_stream")}
        finally:
            engine.dispose()

    def lake_ids(self) -> set[str]:
        s3 = self.aws("s3")
        ids = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="appdata-lake", Prefix="lake/stream/"):
            for obj in page.get("Contents", []):
                body = gzip.decompress(s3.get_object(Bucket="appdata-lake", Key=obj["Key"])["Body"].read())
                ids.update(json.loads(line)["event_id"] for line in body.decode().splitlines())
        return ids


def wait_for(condition, seconds: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting {seconds:.0f}s for {what}; appdata up said: {stack.output()}"
        time.sleep(1)


def events(users: range, per_user: int, tag: str) -> list[dict]:
    return [make_event(n, user_id=user, download_date=TODAY, event_id=f"{tag}-{user}-{n}")
            for user in users for n in range(per_user)]


@pytest.fixture()
def stack(tmp_path):
    stack = Stack(tmp_path / "home")
    yield stack
    if stack.proc is not None and stack.proc.poll() is None:  # a failed test must not leave the stack running
        stack.proc.kill()
    for line in stack.leftovers():
        os.kill(int(line.split(":")[0]), signal.SIGKILL)


def _all_visible(stack: Stack, users: range, expected: set[str]) -> bool:
    return set().union(*(stack.downloads(u) for u in users)) >= expected


def test_state_survives_sigterm_and_restart(stack):
    first_users, second_users = range(950_001, 950_004), range(950_004, 950_007)
    stack.up()
    first = set(stack.post(events(first_users, 4, "first")))
    wait_for(lambda: _all_visible(stack, first_users, first), 300, "the first events through GET", stack)

    assert stack.stop(signal.SIGTERM) == 0, stack.output()
    assert stack.leftovers() == []
    assert stack.ports_free()
    assert stack.warehouse_ids() >= first

    stack.up()
    assert "state restored from" in (stack.home / "logs" / "emulator.log").read_text()
    assert _all_visible(stack, first_users, first)  # DynamoDB came back with the first set
    second = set(stack.post(events(second_users, 4, "second")))
    # drained after the restart: the sensor went on from its saved position on the restored stream
    wait_for(lambda: _all_visible(stack, second_users, second), 300, "the second events through GET", stack)
    assert stack.lake_ids() >= first | second

    assert stack.stop(signal.SIGINT) == 0, stack.output()
    assert stack.leftovers() == [] and stack.ports_free()
    assert stack.warehouse_ids() >= first | second
    dagster_log = (stack.home / "logs" / "dagster.log").read_text()
    assert "re-created" not in dagster_log  # the restored stream is the same stream


def test_a_child_dying_on_its_own_stops_the_stack_with_exit_1(stack):
    stack.up("--no-ui")
    api = next(int(line.split(":")[0]) for line in stack.leftovers() if "appdata.cli api" in line)
    os.kill(api, signal.SIGKILL)
    code = stack.proc.wait(timeout=120)
    stack.out.close()
    assert code == 1
    assert "api exited on its own" in stack.output()
    assert stack.leftovers() == [] and stack.ports_free()


def test_sigkill_of_up_leaves_nothing_serving_and_the_next_start_names_a_held_port(stack):
    stack.up()
    started = stack.leftovers()
    assert any("dagster" in line for line in started) and any("appdata.cli api" in line for line in started)
    stack.proc.kill()  # no stop of its own: the guard stops the children's groups
    stack.proc.wait(timeout=60)
    stack.out.close()
    wait_for(lambda: stack.leftovers() == [] and stack.ports_free(), 60,
             "the children of the killed appdata up to be gone", stack)
    assert "appdata up ended without stopping its children" in (stack.home / "logs" / "guard.log").read_text()

    with socket.socket() as foreign:  # another program on the API's port: named, nothing started
        foreign.bind(("127.0.0.1", stack.ports["api"]))
        foreign.listen()
        result = subprocess.run([sys.executable, "-m", "appdata.cli", "up", "--no-ui"], env=stack.env,
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: port {stack.ports['api']} (ingest API) is held by pid {os.getpid()} (")
    assert line.endswith(": stop it, or set APPDATA_API_PORT to another port") and result.stdout == ""
    assert stack.leftovers() == []
