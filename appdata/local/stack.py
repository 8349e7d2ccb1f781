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


class Supervisor:
    """Starts children in their own process groups, tees their output, stops them all."""

    def __init__(self, env: dict[str, str], log_dir: Path, *, verbose: bool = False,
                 echo: Callable[[str], None] | None = None, runs: RunWatcher | None = None):
        self.env = env
        self.log_dir = log_dir
        self.verbose = verbose
        self.echo = echo or (lambda text: print(text, flush=True))
        self.runs = runs
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
            _signal_group(child.proc, signal.SIGTERM)
        step("SIGTERM to " + (", ".join(c.name for c in first) or "nothing"))
        if self.runs is not None and self.runs.cancel_in_flight():
            step("more runs marked CANCELING (launched meanwhile)")
        settled = self.runs.settled if self.runs is not None else None
        step(self._end(first, started + budget - (emulator_seconds if last else 0.0), settled))
        if self.runs is not None:
            step(f"{self.runs.finish_in_flight()} run(s) without an end marked CANCELED")
        for child in last:
            _signal_group(child.proc, signal.SIGTERM)
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
            _signal_group(child.proc, signal.SIGKILL)
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
    return _group_alive(proc)


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
