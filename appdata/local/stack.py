"""`appdata up`'s supervisor: the local stack's processes, their logs, and a clean stop.

Each child runs in its own process group (so `dagster dev`'s webserver, daemon, code server
and run workers are reached too) and writes everything to `$APPDATA_HOME/logs/<name>.log`.
The terminal gets only what a person should read: one line per run start and end, warnings
and errors (each distinct one once), tracebacks, and 5xx answers of the API; `--verbose`
passes every line through. SIGTERM (systemd, a container stop) and SIGINT (Ctrl-C) stop every
group, the emulator last so it can write its snapshot: each leader is asked to stop first
(`dagster dev` then stops its daemon, so no new run launches, and its webserver), the runs
already going are given a few seconds to finish, then asked to stop (SIGTERM), and only what is
left at the timeout is killed. While stopping, the terminal shows run ends only (the rest is in
the logs). A child that dies on its own stops the rest and makes the exit code non-zero.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# `2026-12-02 18:20:11 +0000 - dagster - DEBUG - job - run id - [step - ]EVENT - message`
DAGSTER_LINE = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d) (?P<time>\d\d:\d\d:\d\d) [+-]\d{4} - (?P<logger>\S+) - (?P<level>[A-Z]+) - (?P<rest>.*)$"
)
RUN_EVENT = re.compile(
    r"^(?P<job>\S+) - (?P<run>[0-9a-f-]{36}) - (?:\S+ - )?(?P<event>RUN_START|RUN_SUCCESS|RUN_FAILURE|RUN_CANCELED) - "
)
PY_WARNING = re.compile(r"^\S+:\d+: (?P<category>\w+Warning): (?P<message>.*)$")
ACCESS_5XX = re.compile(r'" 5\d\d\b')
# Python warnings that appdata/__init__.py does not already silence, hidden from the terminal
# (they stay in the log files): library lifecycle notices, not problems of this stack.
KNOWN_WARNINGS = frozenset({"BetaWarning", "PreviewWarning", "SupersessionWarning", "DeprecationWarning",
                            "ExperimentalWarning"})
# How long runs left behind by a stopped leader may take to end on their own before they are asked
# to stop (SIGTERM: Dagster interrupts the run; a drain consumer, which never ends on its own for
# minutes, hands its shard's lease over), and killed at the stop's timeout.
RUN_GRACE_SECONDS = 5.0
RUN_LINE = re.compile(r"^\d\d:\d\d:\d\d run ")
RUN_WORDS = {"RUN_START": "started", "RUN_SUCCESS": "succeeded", "RUN_FAILURE": "FAILED", "RUN_CANCELED": "canceled"}


@dataclass
class TerminalFilter:
    """Decides, line by line, what of a child's output reaches the terminal (not thread-safe:
    one per child)."""

    name: str
    seen: set[str] = field(default_factory=set)
    _in_traceback: bool = False
    _skip_source_line: bool = False

    def __call__(self, raw: str) -> str | None:
        line = ANSI.sub("", raw.rstrip("\n"))
        if self._skip_source_line:  # the code line Python prints under a warning
            self._skip_source_line = False
            if line.startswith("  "):
                return None
        if self._in_traceback:
            if line.startswith((" ", "\t")) or not line.strip():
                return f"[{self.name}] {line}"
            self._in_traceback = False
            return f"[{self.name}] {line}"  # the exception line itself
        if line.startswith("Traceback (most recent call last)"):
            self._in_traceback = True
            return f"[{self.name}] {line}"
        warning = PY_WARNING.match(line)
        if warning:
            self._skip_source_line = True
            if warning["category"] in KNOWN_WARNINGS:
                return None
            return self._once(f"{warning['category']}: {warning['message']}")
        parsed = DAGSTER_LINE.match(line)
        if parsed:
            run = RUN_EVENT.match(parsed["rest"])
            if run:
                return f"{parsed['time']} run {run['job']} {run['run'][:8]} {RUN_WORDS[run['event']]}"
            if parsed["level"] in ("WARNING", "ERROR", "CRITICAL"):
                relayed = PY_WARNING.match(parsed["rest"])  # a Python warning Dagster logged
                if relayed and relayed["category"] in KNOWN_WARNINGS:
                    return None
                return self._once(f"{parsed['level']} {parsed['rest']}", stamp=parsed["time"])
            return None
        if ACCESS_5XX.search(line) or re.search(r"\b(ERROR|CRITICAL)\b", line):
            return self._once(line)
        return None

    def _once(self, text: str, stamp: str | None = None) -> str | None:
        if text in self.seen:
            return None
        self.seen.add(text)
        return f"{stamp + ' ' if stamp else ''}[{self.name}] {text}"


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    reader: threading.Thread


class Supervisor:
    """Starts children in their own process groups, tees their output, stops them all."""

    def __init__(self, env: dict[str, str], log_dir: Path, *, verbose: bool = False,
                 echo: Callable[[str], None] | None = None):
        self.env = env
        self.log_dir = log_dir
        self.verbose = verbose
        self.echo = echo or (lambda text: print(text, flush=True))
        self.children: list[Child] = []
        self.stopping = False
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=self.env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace",
                                bufsize=1)
        log = open(self.log_dir / f"{name}.log", "a", encoding="utf-8")
        reader = threading.Thread(target=self._pump, args=(name, proc.stdout, log), name=f"log-{name}", daemon=True)
        reader.start()
        self.children.append(Child(name, proc, reader))
        return proc

    def run(self, name: str, args: list[str]) -> None:
        """A one-shot step (provisioning, first materialization): its output to its log, raise on failure."""
        proc = self.start(name, args)
        code = proc.wait()
        self.children = [c for c in self.children if c.proc is not proc]
        if code != 0:
            raise RuntimeError(f"{name} failed with exit code {code}; see {self.log_dir / (name + '.log')}")

    def _pump(self, name: str, stream: TextIO, log: TextIO) -> None:
        show = TerminalFilter(name)
        with log:
            for line in stream:
                log.write(line)
                log.flush()
                text = f"[{name}] {line.rstrip()}" if self.verbose else show(line)
                if self.stopping and not self.verbose and text is not None and not RUN_LINE.match(text):
                    continue  # interruptions of a stop we asked for: in the log, not on the terminal
                if text is not None:
                    self.echo(text)

    def died(self) -> Child | None:
        """A long-running child that exited on its own, if any."""
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every child: all but the emulator first, then the emulator. Each leader gets
        SIGINT; once it is gone, what it left in its group (a run worker) gets RUN_GRACE_SECONDS to
        end on its own, then SIGTERM, then the rest of `timeout` before the group is killed."""
        self.stopping = True
        first = [c for c in self.children if c.name != "emulator"]
        last = [c for c in self.children if c.name == "emulator"]
        for group in (first, last):
            for child in group:
                _signal(child.proc, signal.SIGINT)
            deadline = time.monotonic() + timeout
            for child in group:
                try:
                    child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.echo(f"[{child.name}] did not stop within {timeout:.0f}s: killed")
                grace = min(deadline, time.monotonic() + RUN_GRACE_SECONDS)
                while _group_alive(child.proc) and time.monotonic() < grace:
                    time.sleep(0.2)
                _signal_group(child.proc, signal.SIGTERM)  # runs still going: a drain consumer hands over
                while _group_alive(child.proc) and time.monotonic() < deadline:
                    time.sleep(0.2)
                _signal_group(child.proc, signal.SIGKILL)
                child.reader.join(timeout=5)


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _group_alive(proc: subprocess.Popen) -> bool:
    """Whether any process of the child's group (start_new_session: its pid) still runs."""
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass


class Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGINT."""


def raise_stop_on_signals() -> None:
    def handler(signum, _frame):
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]
