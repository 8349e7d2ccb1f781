"""`appdata up`'s supervisor: the local stack's processes, their logs, what the terminal shows,
and a stop within `docker stop`'s 10 seconds.

Each child runs in its own process group (so `dagster dev`'s webserver, daemon, code server
and run workers are reached too) and writes everything to `$APPDATA_HOME/logs/<name>.log`, where
a traceback seen before is written again as one line. The terminal gets only what a person
should read: one line per run end, read from the Dagster instance (`RunWatcher`: succeeded,
FAILED with its reason, canceled; a failing asset check is named with its message even when its
run succeeded), and one line per distinct problem: a warning or an error (numbers and ids aside,
so a sensor that repeats itself every tick is one line), a child's traceback as its exception
line alone, a 5xx answer of the API. `--verbose` passes every line through.

Stop (SIGTERM from systemd or a container stop, SIGINT from Ctrl-C), within `STOP_BUDGET_SECONDS`
(`docker stop` kills at 10): the runs in flight are marked CANCELING in the instance first (so
Dagster ends them CANCELED, not FAILURE: it treats an interrupt it was not asked for as a
failure), then every group but the emulator's gets SIGTERM at once (the daemon stops launching,
each run is interrupted: a drain consumer hands its shard's lease over). Once no run is left that
could still record its end, or at the emulator's share of the budget before the end, what is left
of those groups is killed (the webserver and daemon keep their state in the instance: nothing to
save), and a run whose process died without recording its end is marked CANCELED. The emulator
goes last, so the runs can still write while they stop, with the rest of the budget to finish its
request and write its snapshot. Each step's time goes to `logs/stop.log`. What a stopped run did
not do, the next start does again: the drain sensor starts the next consumer at once (it drains
the pending range first), the analytics automation requests what was not rebuilt, queued runs stay
queued. While stopping, the terminal shows run ends only. A child that dies on its own stops the
rest and makes the exit code non-zero.

Killed outright (SIGKILL, a crash), the supervisor runs no stop at all; its children are not left
serving. A guard process, in a session of its own, is told each child's group as it starts and
notices the supervisor's end as the end of its pipe: unless told `done`, it stops those groups
(SIGTERM, the emulator last, SIGKILL after `GUARD_STEP_SECONDS`; the groups reach `dagster dev`'s
webserver, daemon, code server and runs, which PR_SET_PDEATHSIG, sent to direct children only,
would not). Should the guard die too, the pid file (`$APPDATA_HOME/up.pids`) names the groups, and
the next `appdata up` stops what is left of them (`stop_leftovers`) and names what else holds one
of its ports (`held_ports`) before it starts anything.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
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
RUN_ID = re.compile(r"^\S+ - [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12} - ")
RUN_EVENT = re.compile(
    r"^(?P<job>\S+) - (?P<run>[0-9a-f-]{36}) - (?:\S+ - )?(?P<event>RUN_START|RUN_SUCCESS|RUN_FAILURE|RUN_CANCELED) - "
)
PY_WARNING = re.compile(r"^\S+:\d+: (?P<category>\w+Warning): (?P<message>.*)$")
ACCESS_5XX = re.compile(r'" 5\d\d\b')
# What varies between two reports of the same problem: run ids, long hex ids, numbers.
VARYING = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}|\b[0-9a-f]{8,}\b|\d+(?:[.,:]\d+)*")
# Python warnings that appdata/__init__.py does not already silence, hidden from the terminal
# (they stay in the log files): library lifecycle notices, not problems of this stack.
KNOWN_WARNINGS = frozenset({"BetaWarning", "PreviewWarning", "SupersessionWarning", "DeprecationWarning",
                            "ExperimentalWarning"})
# The whole stop, SIGTERM to exit: `docker stop` kills at 10 s; what is not in the budget (the
# instance's last look, the interpreter's exit) has the rest. The emulator's share comes last: a
# snapshot of a day's stream takes about a second.
STOP_BUDGET_SECONDS = 7.5
EMULATOR_STOP_SECONDS = 3.0
LINE_LIMIT = 240  # characters of a problem's text on the terminal
RUN_LINE = re.compile(r"^\d\d:\d\d:\d\d run ")
RUN_WORDS = {"RUN_START": "started", "RUN_SUCCESS": "succeeded", "RUN_FAILURE": "FAILED", "RUN_CANCELED": "canceled"}


def problem_key(text: str) -> str:
    """What two reports of one problem share (ids and numbers replaced)."""
    return VARYING.sub("#", text)


def shorten(text: str, limit: int = LINE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass
class TerminalFilter:
    """Decides, line by line, what of a child's output reaches the terminal (not thread-safe:
    one per child). With `runs_from_instance`, run ends come from the `RunWatcher`, so Dagster's
    run events and the errors of runs (their end line names the reason) are not repeated here."""

    name: str
    runs_from_instance: bool = False
    log_hint: str = ""
    seen: set[str] = field(default_factory=set)
    _in_traceback: bool = False
    _skip_source_line: bool = False

    def __call__(self, raw: str) -> str | None:
        line = ANSI.sub("", raw.rstrip("\n"))
        if self._skip_source_line:  # the code line Python prints under a warning
            self._skip_source_line = False
            if line.startswith("  "):
                return None
        if self._in_traceback:  # the frames stay in the log; the exception line stands for them
            if line.startswith((" ", "\t")) or not line.strip():
                return None
            self._in_traceback = False
            hint = f" (traceback in {self.log_hint})" if self.log_hint else ""
            return self._once(shorten(line) + hint, key=line)
        if line.startswith("Traceback (most recent call last)"):
            self._in_traceback = True
            return None
        warning = PY_WARNING.match(line)
        if warning:
            self._skip_source_line = True
            if warning["category"] in KNOWN_WARNINGS:
                return None
            return self._once(shorten(f"{warning['category']}: {warning['message']}"))
        parsed = DAGSTER_LINE.match(line)
        if parsed:
            rest = parsed["rest"]
            run = RUN_EVENT.match(rest)
            if run:
                if self.runs_from_instance:
                    return None
                return f"{parsed['time']} run {run['job']} {run['run'][:8]} {RUN_WORDS[run['event']]}"
            if parsed["level"] in ("WARNING", "ERROR", "CRITICAL"):
                relayed = PY_WARNING.match(rest)  # a Python warning Dagster logged
                if relayed and relayed["category"] in KNOWN_WARNINGS:
                    return None
                if self.runs_from_instance and parsed["level"] != "WARNING" and RUN_ID.match(rest):
                    return None  # a run's error: its end line, from the instance, gives the reason
                return self._once(shorten(f"{parsed['level']} {rest}"), stamp=parsed["time"],
                                  key=f"{parsed['level']} {rest}")
            return None
        if ACCESS_5XX.search(line) or re.search(r"\b(ERROR|CRITICAL)\b", line):
            return self._once(shorten(line), key=line)
        return None

    def _once(self, text: str, stamp: str | None = None, key: str | None = None) -> str | None:
        key = problem_key(key if key is not None else text)
        if key in self.seen:
            return None
        self.seen.add(key)
        return f"{stamp + ' ' if stamp else ''}[{self.name}] {text}"


@dataclass
class LogCompactor:
    """What of a child's output goes to its log file: every line, except that a traceback written
    once already (the same frames and exception, numbers aside) is written again as one line. Both
    shapes: Python's (`Traceback (most recent call last):` ... the exception line) and the
    `Stack Trace:` block Dagster writes under a failed step or run (its frames, up to the next line
    that is not one)."""

    counts: dict[str, int] = field(default_factory=dict)
    _block: list[str] | None = None
    _dagster: bool = False

    def __call__(self, raw: str) -> list[str]:
        line = ANSI.sub("", raw.rstrip("\n"))
        out: list[str] = []
        if self._block is not None:
            if line.startswith((" ", "\t")) or not line.strip():
                self._block.append(raw)
                return []
            if not self._dagster:
                self._block.append(raw)
                return self._close(line)
            out = self._close("a Dagster stack trace")  # this line is not part of it: handled below
        if line.startswith("Traceback (most recent call last)") or line == "Stack Trace:":
            self._block, self._dagster = [raw], line == "Stack Trace:"
            return out
        return out + [raw]

    def flush(self) -> list[str]:
        block, self._block = self._block or [], None
        return block

    def _close(self, last_line: str) -> list[str]:
        block, self._block = self._block, None
        key = problem_key("".join(block))
        count = self.counts[key] = self.counts.get(key, 0) + 1
        if count == 1:
            return block
        return [f"(traceback {count} of this kind, frames as logged the first time) {last_line}\n"]


IN_FLIGHT = ("NOT_STARTED", "STARTING", "STARTED", "CANCELING")  # QUEUED runs stay queued for the next start
ENDS = ("RUN_SUCCESS", "RUN_FAILURE", "RUN_CANCELED")
STOPPED_MESSAGE = "appdata up is stopping: the run is asked to stop; the next start does again what it did not do"


class RunWatcher:
    """The stack's Dagster instance (DAGSTER_HOME), read with its public API: one terminal line per
    run end since the watcher started (and each failing check of that run), and, on stop, the runs
    in flight canceled through it. Its own problems (an unreadable instance) are one line each."""

    def __init__(self, dagster_home: Path, echo: Callable[[str], None], *, poll_seconds: float = 1.0):
        self.dagster_home = dagster_home
        self.echo = echo
        self.poll_seconds = poll_seconds
        self.since = time.time()
        self._instance = None
        self._cursors: dict[str, str | None] = {}
        self._reported: set[str] = set()
        self._problems: set[str] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def instance(self):
        if self._instance is None:
            import dagster as dg

            self._instance = dg.DagsterInstance.from_config(str(self.dagster_home))
        return self._instance

    def start(self) -> None:
        """Open the instance here, before any child does: two processes creating a new instance's
        storage at once can both stamp its schema (alembic then finds two heads)."""
        try:
            self.instance
        except Exception as exc:  # noqa: BLE001 - said once; the watcher tries again on each poll
            self._problem(f"cannot open the Dagster instance in {self.dagster_home}: {type(exc).__name__}: {exc}")
        self._thread = threading.Thread(target=self._loop, name="run-watcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=0.5)
        self.poll()  # run ends of the stop itself
        if self._instance is not None:
            self._instance.dispose()

    def _loop(self) -> None:
        while not self._done.wait(self.poll_seconds):
            self.poll()

    def poll(self) -> list[str]:
        """Print (and return) the lines of the runs that ended since the last poll."""
        try:
            with self._lock:
                lines = self._new_run_ends()
        except Exception as exc:  # noqa: BLE001 - the stack goes on; the runs are still in the UI and logs
            self._problem(f"cannot read run ends from the Dagster instance in {self.dagster_home}: "
                          f"{type(exc).__name__}: {exc}")
            return []
        for line in lines:
            self.echo(line)
        return lines

    def _new_run_ends(self) -> list[str]:
        import dagster as dg

        ended = []
        for event_type in ENDS:
            while True:
                result = self.instance.fetch_run_status_changes(
                    dg.RunStatusChangeRecordsFilter(dg.DagsterEventType[event_type], after_timestamp=self.since),
                    limit=100, cursor=self._cursors.get(event_type), ascending=True)
                self._cursors[event_type] = result.cursor
                ended += [(record.storage_id, event_type, record) for record in result.records]
                if not result.has_more:
                    break
        lines = []
        for _, event_type, record in sorted(ended, key=lambda item: item[0]):
            run_id = record.event_log_entry.run_id
            if run_id in self._reported:
                continue
            self._reported.add(run_id)
            lines.append(run_end_line(self.instance, run_id, event_type, record.timestamp))
        return lines

    def cancel_in_flight(self) -> int:
        """Mark the runs that are going CANCELING (a run interrupted in that state ends CANCELED)."""
        return self._each_in_flight(("STARTING", "STARTED"),
                                    lambda instance, run: instance.report_run_canceling(run, STOPPED_MESSAGE))

    def settled(self) -> bool:
        """Whether no run of the stack's is left that could still record its own end (STARTED or
        CANCELING); an unreadable instance counts as settled (the budget's deadline is all there is)."""
        try:
            with self._lock:
                return not self._stack_runs(("STARTED", "CANCELING"))
        except Exception:  # noqa: BLE001
            return True

    def finish_in_flight(self) -> int:
        """After every run process is gone: mark CANCELED the runs that could not record their end."""
        return self._each_in_flight(IN_FLIGHT, lambda instance, run: instance.report_run_canceled(
            run, "appdata up stopped: the run's process ended before it recorded its end"))

    def _each_in_flight(self, statuses: tuple[str, ...], action) -> int:
        try:
            with self._lock:
                runs = self._stack_runs(statuses)
                for run in runs:
                    action(self.instance, run)
                return len(runs)
        except Exception as exc:  # noqa: BLE001 - the stop goes on within its budget whatever happens here
            self._problem(f"could not cancel the runs in flight through the Dagster instance: "
                          f"{type(exc).__name__}: {exc}")
            return 0

    def _stack_runs(self, statuses: tuple[str, ...]) -> list:
        """The runs in these statuses that the stack's daemon or webserver launched (hold the lock)."""
        import dagster as dg

        records = self.instance.get_run_records(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus[status] for status in statuses]))
        return [record.dagster_run for record in records if launched_by_a_code_server(record.dagster_run)]

    def _problem(self, text: str) -> None:
        if problem_key(text) not in self._problems:
            self._problems.add(problem_key(text))
            self.echo(f"[runs] {shorten(text)}")


def launched_by_a_code_server(run) -> bool:
    """Whether the run was launched by a daemon or webserver (the stack's), as opposed to executed
    in a process of its own on the same instance (`appdata demo`, `dagster asset materialize`, a
    test), which ends its runs itself and is none of the stop's business. Dagster tags the first
    kind with the code location it was launched from."""
    return bool(run.tags.get("dagster/code_location") or run.tags.get(".dagster/grpc_info"))


def run_end_line(instance, run_id: str, event_type: str, timestamp: float) -> str:
    """`HH:MM:SS run JOB ID8 succeeded|FAILED: reason|canceled`, and each failing check of the run."""
    import dagster as dg

    run = instance.get_run_by_id(run_id)
    head = f"{time.strftime('%H:%M:%S', time.localtime(timestamp))} run {_run_name(run)} {run_id[:8]}"
    word = RUN_WORDS[event_type]
    if event_type == "RUN_FAILURE":
        word = f"FAILED: {failure_reason(instance, run_id)}"
    failed = []
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records:
        evaluation = record.event_log_entry.dagster_event.asset_check_evaluation_data
        if not evaluation.passed:
            verdict = "FAILED" if evaluation.severity == dg.AssetCheckSeverity.ERROR else "warned"
            failed.append(f"check {evaluation.check_name} {verdict}: "
                          + shorten(evaluation.description or "(no description)", LINE_LIMIT // 2))
    return shorten(", ".join([f"{head} {word}", *failed]), 2 * LINE_LIMIT)


def _run_name(run) -> str:
    """The job's name; for an ad-hoc asset run (automation, `dagster asset materialize`), its assets."""
    if run is None:
        return "?"
    if run.job_name.startswith("__ASSET_JOB") and run.asset_selection:
        keys = sorted(key.to_user_string() for key in run.asset_selection)
        return ",".join(keys[:3]) + (f",+{len(keys) - 3}" if len(keys) > 3 else "")
    return run.job_name


def failure_reason(instance, run_id: str) -> str:
    """The root cause of a failed run, on one line: its first failed step's innermost exception
    (or a `Failure`'s description), else the run failure's own error or message."""
    import dagster as dg

    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}).records
    events = [r.event_log_entry.dagster_event for r in records]
    steps = [e for e in events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    runs = [e for e in events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
    for event in steps:
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            reason = data.user_failure_data.description
        else:
            reason = _innermost(data.error)
        more = f" (+{len(steps) - 1} more failed steps)" if len(steps) > 1 else ""
        return f"step {event.step_key}: {reason}{more}"
    for event in runs:
        data = event.job_failure_data
        if data is not None and data.error is not None:
            return _innermost(data.error)
        return event.message or "run failed"
    return "run failed (no failure event recorded)"


def _innermost(error) -> str:
    while error.cause is not None:
        error = error.cause
    lines = (error.message or error.cls_name or "").strip().splitlines()
    text = re.sub(r"^(?:[A-Za-z_][\w]*\.)+(?=\w+: )", "", lines[0] if lines else error.cls_name)  # short class name
    return re.sub(r"\s*<(?:!doctype|html).*$", " (an HTML error page)", text, flags=re.IGNORECASE)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    reader: threading.Thread
    command: str = ""


class Supervisor:
    """Starts children in their own process groups, tees their output, stops them all; with a
    `pid_file`, a guard stops them should the supervisor be killed, and the file names them."""

    def __init__(self, env: dict[str, str], log_dir: Path, *, verbose: bool = False,
                 echo: Callable[[str], None] | None = None, runs: RunWatcher | None = None,
                 pid_file: Path | None = None):
        self.env = env
        self.log_dir = log_dir
        self.verbose = verbose
        self.echo = echo or (lambda text: print(text, flush=True))
        self.runs = runs
        self.pid_file = pid_file
        self.children: list[Child] = []
        self.stopping = False
        log_dir.mkdir(parents=True, exist_ok=True)
        self._guard = start_guard(env, log_dir / "guard.log") if pid_file is not None else None
        self._write_pid_file()

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=self.env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace",
                                bufsize=1)
        self._tell_guard(f"{proc.pid} {name}")
        log = open(self.log_dir / f"{name}.log", "a", encoding="utf-8")
        reader = threading.Thread(target=self._pump, args=(name, proc.stdout, log), name=f"log-{name}", daemon=True)
        reader.start()
        self.children.append(Child(name, proc, reader, " ".join(args)))
        self._write_pid_file()
        return proc

    def run(self, name: str, args: list[str]) -> None:
        """A one-shot step (provisioning, first materialization): its output to its log, raise on failure."""
        proc = self.start(name, args)
        code = proc.wait()
        self.children = [c for c in self.children if c.proc is not proc]
        self._tell_guard(f"gone {proc.pid}")
        self._write_pid_file()
        if code != 0:
            raise RuntimeError(f"{name} failed with exit code {code}; see {self.log_dir / (name + '.log')}")

    def _tell_guard(self, line: str) -> None:
        if self._guard is not None:
            try:
                self._guard.stdin.write(line + "\n")
                self._guard.stdin.flush()
            except OSError:  # the guard is gone: the pid file still names the children
                pass

    def _write_pid_file(self) -> None:
        """The supervisor and each child's group, with its start time (so a reused pid is not taken for it)."""
        if self.pid_file is None:
            return
        entries = [{"name": "appdata up", "pid": os.getpid(), "started": process_start(os.getpid()),
                    "command": " ".join(sys.argv)}]
        entries += [{"name": c.name, "pid": c.proc.pid, "started": process_start(c.proc.pid), "command": c.command}
                    for c in self.children]
        temporary = self.pid_file.with_suffix(".tmp")
        temporary.write_text("".join(json.dumps(entry) + "\n" for entry in entries), encoding="utf-8")
        temporary.replace(self.pid_file)

    def release(self) -> None:
        """After `stop`: every child is gone; the guard leaves (gone before `appdata up` exits, so
        nothing of the stack outlives it) and the pid file goes."""
        self._tell_guard("done")
        if self._guard is not None:
            try:
                self._guard.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self._guard.kill()
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)

    def _pump(self, name: str, stream: TextIO, log: TextIO) -> None:
        show = TerminalFilter(name, runs_from_instance=self.runs is not None,
                              log_hint=str(self.log_dir / f"{name}.log"))
        compact = LogCompactor()
        with log:
            for line in stream:
                log.writelines(compact(line))
                log.flush()
                text = f"[{name}] {line.rstrip()}" if self.verbose else show(line)
                if self.stopping and not self.verbose and text is not None and not RUN_LINE.match(text):
                    continue  # interruptions of a stop we asked for: in the log, not on the terminal
                if text is not None:
                    self.echo(text)
            log.writelines(compact.flush())

    def died(self) -> Child | None:
        """A long-running child that exited on its own, if any."""
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop(self, budget: float = STOP_BUDGET_SECONDS, emulator_seconds: float = EMULATOR_STOP_SECONDS) -> float:
        """Stop every child within `budget` seconds; returns the seconds it took.

        The runs in flight are marked CANCELING, then every group but the emulator's gets SIGTERM
        at once. Those groups are killed as soon as no run is left that could still record its end
        (the webserver and daemon need no graceful exit: their state is in the instance), or at
        `budget - emulator_seconds`; runs whose process is gone without an end are marked CANCELED.
        Then the emulator gets SIGTERM (it finishes its request and writes its snapshot) and is
        killed at `budget`. Each step's time goes to `stop.log` in the log directory."""
        started = time.monotonic()
        self.stopping = True
        steps: list[str] = []

        def step(what: str) -> None:
            steps.append(f"{time.monotonic() - started:6.2f}s {what}")

        first = [c for c in self.children if c.name != "emulator"]
        last = [c for c in self.children if c.name == "emulator"]
        if self.runs is not None:
            step(f"{self.runs.cancel_in_flight()} run(s) marked CANCELING")
        for child in first:
            _kill_group(child.proc.pid, signal.SIGTERM)
        step("SIGTERM to " + (", ".join(c.name for c in first) or "nothing"))
        if self.runs is not None and self.runs.cancel_in_flight():
            step("more runs marked CANCELING (launched meanwhile)")
        settled = self.runs.settled if self.runs is not None else None
        step(self._end(first, started + budget - (emulator_seconds if last else 0.0), settled))
        if self.runs is not None:
            step(f"{self.runs.finish_in_flight()} run(s) without an end marked CANCELED")
        for child in last:
            _kill_group(child.proc.pid, signal.SIGTERM)
        if last:
            step("SIGTERM to emulator")
            step(self._end(last, started + budget))
        elapsed = time.monotonic() - started
        try:
            with open(self.log_dir / "stop.log", "a", encoding="utf-8") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} stop in {elapsed:.2f}s (budget {budget:.1f}s)\n"
                          + "".join(f"  {line}\n" for line in steps))
        except OSError:
            pass
        return elapsed

    def _end(self, children: list[Child], deadline: float, settled: Callable[[], bool] | None = None) -> str:
        """Wait for the children's groups to be gone until `deadline` (or, with `settled`, until it
        says nothing left there needs a graceful end), then kill what is left; what happened."""
        next_look = time.monotonic() + 0.2
        ended = "exited"
        while any(_alive(c.proc) for c in children):
            now = time.monotonic()
            if now >= deadline:
                ended = "deadline"
                break
            if settled is not None and now >= next_look:
                if settled():
                    ended = "no run left to end"
                    break
                next_look = now + 0.2
            time.sleep(0.05)
        killed = [c.name for c in children if _alive(c.proc)]
        for child in children:
            _kill_group(child.proc.pid, signal.SIGKILL)
        join_by = time.monotonic() + 1.0
        for child in children:
            try:
                child.proc.wait(timeout=max(0.05, join_by - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            child.reader.join(timeout=max(0.05, join_by - time.monotonic()))
        names = ", ".join(c.name for c in children)
        return f"{names}: {ended}" + (f", killed {', '.join(killed)}" if killed else "")


def _alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reap the leader: a zombie still counts as a member of its group
    return group_alive(proc.pid)  # start_new_session: the group id is the child's pid


# ----------------------------------------------------------------- what outlives a killed supervisor

GUARD_STEP_SECONDS = 3.0  # SIGTERM to SIGKILL, for the other groups, then for the emulator's


def start_guard(env: dict[str, str], log: Path) -> subprocess.Popen:
    """The guard (`guard_main`), in a session of its own so a signal to the supervisor's group
    spares it; the supervisor holds the only write end of its stdin."""
    with open(log, "a", encoding="utf-8") as out:
        return subprocess.Popen(python("-c", "from appdata.local.stack import guard_main; guard_main()"), env=env,
                                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)


def guard_main() -> None:
    """Read `<pid> <name>` (a child's group), `gone <pid>` and `done` lines until the supervisor's
    end; at the end of the pipe without `done`, stop the groups, the emulator's last."""
    groups: dict[int, str] = {}
    for line in sys.stdin:
        word, _, rest = line.strip().partition(" ")
        if word == "done":
            return
        if word == "gone":
            groups.pop(int(rest), None)
        elif word.isdigit():
            groups[int(word)] = rest
    alive = {pid: name for pid, name in groups.items() if group_alive(pid)}
    if not alive:
        return
    for batch in ([p for p, n in alive.items() if n != "emulator"], [p for p, n in alive.items() if n == "emulator"]):
        stop_groups(batch, GUARD_STEP_SECONDS)
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} appdata up ended without stopping its children: stopped "
          + ", ".join(f"{name} (group {pid})" for pid, name in alive.items()), flush=True)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still exists (a zombie leader counts until it is reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_groups(pgids: list[int], seconds: float) -> None:
    """SIGTERM to each group, SIGKILL to what is left of them after `seconds`."""
    for pgid in pgids:
        _kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    while any(group_alive(p) for p in pgids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pgid in pgids:
        _kill_group(pgid, signal.SIGKILL)


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux /proc), None where not known."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counted after the command in parentheses


def listeners() -> dict[int, list[int]]:
    """TCP port -> pids of the processes listening on it (Linux /proc; empty elsewhere)."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cells = row.split()
            if len(cells) > 9 and cells[3] == "0A":  # LISTEN
                inodes[cells[9]] = int(cells[1].rsplit(":", 1)[1], 16)
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if inodes else []:
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:  # closed meanwhile (the listing's own descriptor, for one)
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                found.setdefault(inodes[link[8:-1]], []).append(int(entry.name))
    return found


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def stop_leftovers(pid_file: Path) -> list[str]:
    """Stop the groups a killed `appdata up` on this home left running (its pid file names them),
    one line for each: pid, command and the ports it held. Raises RuntimeError when that
    `appdata up` itself still runs."""
    try:
        entries = [json.loads(line) for line in pid_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return []
    left = [e for e in entries if e.get("started") is not None and process_start(e["pid"]) == e["started"]]
    supervisor = next((e for e in left if e["name"] == "appdata up"), None)
    if supervisor is not None and supervisor["pid"] != os.getpid():
        raise RuntimeError(f"appdata up is already running on this APPDATA_HOME (pid {supervisor['pid']}); "
                           "stop it first (Ctrl-C in its terminal, or kill -TERM " f"{supervisor['pid']})")
    groups = [e for e in left if e["name"] != "appdata up"]
    if not groups:
        pid_file.unlink(missing_ok=True)
        return []
    ports = listeners()
    lines = []
    for entry in groups:
        held = sorted(port for port, pids in ports.items() if any(_group_of(p) == entry["pid"] for p in pids))
        lines.append(f"stopped {entry['name']} left running by an appdata up that was killed: group {entry['pid']} "
                     f"({shorten(entry['command'], 100)})" + (f", port {', '.join(map(str, held))}" if held else ""))
    stop_groups([e["pid"] for e in groups if e["name"] != "emulator"], GUARD_STEP_SECONDS)
    stop_groups([e["pid"] for e in groups if e["name"] == "emulator"], GUARD_STEP_SECONDS)
    pid_file.unlink(missing_ok=True)
    return lines


def held_ports(wanted: list[tuple[str, str, int, str]]) -> list[str]:
    """One line per (what, host, port, how to move it) the stack cannot listen on, naming the
    process that holds it when this user can see it."""
    holders = None
    lines = []
    for what, host, port, remedy in wanted:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no holder
            try:
                sock.bind((host, port))
                continue
            except OSError:
                pass
        holders = listeners() if holders is None else holders
        pids = holders.get(port, [])
        who = (f"pid {pids[0]} ({shorten(command_of(pids[0]), 100)})" if pids
               else "a process of another user (see: ss -ltnp)")
        lines.append(f"port {port} ({what}) is held by {who}: stop it, or {remedy}")
    return lines


class Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGINT."""


def raise_stop_on_signals() -> None:
    def handler(signum, _frame):
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]
