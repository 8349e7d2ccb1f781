"""A supervisor killed outright leaves nothing serving: its guard stops the children's groups, and
should the guard die too, the next start finds them in the pid file, names them and stops them.
Real processes (a supervisor in a process of its own, children listening on a port); every wait
is a poll for a condition with a deadline."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appdata.local.stack import group_alive, held_ports, stop_leftovers

# A supervisor with one child that listens on a free port (and a grandchild in its group), then waits.
SUPERVISOR = """
import sys, time
from pathlib import Path
from appdata.local.stack import Supervisor
home = Path(sys.argv[1])
stack = Supervisor({}, home / "logs", echo=lambda _: None, pid_file=home / "up.pids")
server = ("import socket, subprocess, sys, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
          "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
          "print(s.getsockname()[1], flush=True); time.sleep(600)")
stack.start("api", [sys.executable, "-c", server])
print(stack._guard.pid, flush=True)
time.sleep(600)
"""


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting {seconds:.0f}s for {what}"
        time.sleep(0.05)


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


@pytest.fixture()
def supervisor(tmp_path):
    """(process, home, guard pid, child group, child port) of a running supervisor."""
    home = tmp_path / "home"
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(home)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    guard = int(proc.stdout.readline())
    wait_until(lambda: len(_entries(home)) == 2, 30, "the pid file to name the child")
    child = _entries(home)[1]["pid"]
    wait_until(lambda: len(_group_members(child)) == 2, 30, "the child and its grandchild")
    log = home / "logs" / "api.log"
    wait_until(lambda: log.exists() and log.read_text().strip() != "", 30, "the child's port")
    port = int(log.read_text().split()[0])
    yield proc, home, guard, child, port
    for pid in (proc.pid, guard):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    for pid in _group_members(child):
        os.kill(pid, signal.SIGKILL)


def _entries(home: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (home / "up.pids").read_text().splitlines()]
    except (OSError, ValueError):
        return []


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_the_guard_stops_the_children_of_a_killed_supervisor(supervisor):
    proc, home, guard, child, port = supervisor
    assert not _port_free(port)
    proc.kill()
    proc.wait()
    wait_until(lambda: not group_alive(child) or not _group_members(child), 30, "the child's group to be gone")
    assert _port_free(port)
    wait_until(lambda: "stopped api" in (home / "logs" / "guard.log").read_text(), 30, "the guard's line")


def test_the_next_start_names_and_stops_what_a_killed_supervisor_and_guard_left(supervisor):
    proc, home, guard, child, port = supervisor
    with pytest.raises(RuntimeError, match=f"already running on this APPDATA_HOME \\(pid {proc.pid}\\)"):
        stop_leftovers(home / "up.pids")
    os.kill(guard, signal.SIGKILL)
    wait_until(lambda: _group_members(guard) == [], 30, "the guard to be gone")
    proc.kill()
    proc.wait()
    assert len(_group_members(child)) == 2 and not _port_free(port)  # left serving

    (line,) = stop_leftovers(home / "up.pids")
    assert line.startswith(f"stopped api left running by an appdata up that was killed: group {child} (")
    assert line.endswith(f", port {port}")
    assert _group_members(child) == [] and _port_free(port)
    assert not (home / "up.pids").exists() and stop_leftovers(home / "up.pids") == []


def test_a_port_held_by_another_process_is_one_line_naming_it():
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        (line,) = held_ports([("ingest API", "127.0.0.1", port, "set APPDATA_API_PORT to another port")])
    assert line.startswith(f"port {port} (ingest API) is held by pid {os.getpid()} (")
    assert line.endswith(": stop it, or set APPDATA_API_PORT to another port")
    assert held_ports([("ingest API", "127.0.0.1", port, "-")]) == []
