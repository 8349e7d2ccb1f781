"""`appdata up` tells the truth and stops in time, as a user runs it.

A stack whose Kinesis emulator answers 500 on every GetRecords (the emulator's own test-only
switch, APPDATA_EMULATOR_FAIL: it raises inside the real server, as the moto bug did) prints one
line per failed drain run with its reason, the emulator's traceback as one line, the sensor's
complaint once, and the delivery check's failure as a failure; the sinks get a freshness baseline.
And SIGTERM on a machine whose cores are busy stops everything within `docker stop`'s 10 seconds,
with no run marked FAILURE and none left in flight; the next start drains again. Every wait is a
poll for an event (a terminal line, a run status) with a deadline; only the stop is timed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient

from appdata.local.stack import STOP_BUDGET_SECONDS
from appdata.sources.client_files import stream_ledger_path
from appdata.stream.client import record_accepted
from appdata_tests.local.test_stack import Stack, events, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.emulator]
DRAIN_FAILED = re.compile(r"^\d\d:\d\d:\d\d run stream_drain_job [0-9a-f]{8} FAILED: step stream_drain: "
                          r"ClientError: An error occurred \(500\) when calling the GetRecords operation", re.M)
CHECK_FAILED = re.compile(r"^\d\d:\d\d:\d\d run stream_delivery_check_job [0-9a-f]{8} succeeded, check "
                          r"stream_client_delivered FAILED: [\d,]+ of [\d,]+ client events accepted over 120 s ago "
                          r"are NOT in downloads_stream", re.M)
IN_FLIGHT = [dg.DagsterRunStatus[s] for s in ("NOT_STARTED", "STARTING", "STARTED", "CANCELING")]


@pytest.fixture()
def stack(tmp_path):
    stack = Stack(tmp_path / "home")
    yield stack
    if stack.proc is not None and stack.proc.poll() is None:
        stack.proc.kill()
    for line in stack.leftovers():
        os.kill(int(line.split(":")[0]), signal.SIGKILL)


def _output(stack: Stack) -> str:
    return (stack.home.parent / f"up-{stack.starts}.out").read_text()


def _instance(stack: Stack) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(stack.home / "dagster"))


def _launch(stack: Stack, job: str) -> str:
    """A run of `job` through the stack's webserver, as the UI's Launch button does."""
    client = DagsterGraphQLClient("127.0.0.1", port_number=stack.ports["dagster"])
    return client.submit_job_execution(job, repository_location_name="appdata", repository_name="__repository__")


def _runs(instance: dg.DagsterInstance, **filters) -> list[dg.DagsterRun]:
    return [r.dagster_run for r in instance.get_run_records(filters=dg.RunsFilter(**filters))]


def test_a_broken_kinesis_is_one_line_per_failure_and_the_red_check_prints_red(stack):
    stack.env["APPDATA_EMULATOR_FAIL"] = "kinesis:GetRecords"
    stack.up()
    wait_for(lambda: len(DRAIN_FAILED.findall(_output(stack))) >= 2, 600, "two failed drain runs on the terminal",
             stack)

    # Events the API accepted from the client ten minutes ago (by its ledger) are due in downloads_stream.
    accepted = stack.post(events(range(960_001, 960_004), 5, "due"))
    record_accepted(stream_ledger_path(stack.home / "client"), accepted, at=time.time() - 600)
    _launch(stack, "stream_delivery_check_job")
    wait_for(lambda: CHECK_FAILED.search(_output(stack)), 600, "the delivery check's failure on the terminal", stack)

    assert stack.stop(signal.SIGTERM) == 0
    out = _output(stack)
    lines = out.splitlines()
    assert "Traceback" not in out and not any(line.lstrip().startswith('File "') for line in lines), out
    emulator_lines = [line for line in lines if line.startswith("[emulator]")]
    assert emulator_lines == ["[emulator] appdata.local.commands.InjectedFault: GetRecords fails on purpose "
                              f"(APPDATA_EMULATOR_FAIL) (traceback in {stack.home / 'logs' / 'emulator.log'})"]
    failed_drains = DRAIN_FAILED.findall(out)
    sensor_lines = [line for line in lines if "kinesis_drain_sensor" in line]
    assert len(sensor_lines) <= 1, sensor_lines  # not one per tick, nor one per failed run
    instance = _instance(stack)
    try:
        drain_runs = _runs(instance, job_name="stream_drain_job", statuses=[dg.DagsterRunStatus.FAILURE])
        assert len(failed_drains) == len({line.split()[3] for line in lines if DRAIN_FAILED.match(line)})
        assert len(failed_drains) <= len(drain_runs)  # one line per failed run, each with its reason
        ended = [line for line in lines if re.match(r"^\d\d:\d\d:\d\d run ", line)]
        problems = [line for line in lines if line not in ended]
        assert len(problems) <= 12, problems  # the start-up lines, the emulator's one, the sensor's one, the stop
        # The sinks never materialized by a drain have a baseline, so their freshness can turn red.
        baseline = instance.get_latest_materialization_event(dg.AssetKey("downloads_stream"))
        assert baseline.asset_materialization.metadata["baseline"].value is True
    finally:
        instance.dispose()
    # The log has the emulator's traceback in full once, and a line for each repeat.
    log = (stack.home / "logs" / "emulator.log").read_text()
    assert log.count("Traceback (most recent call last)") == 1
    assert log.count("InjectedFault: GetRecords fails on purpose") >= len(failed_drains)


def _burn_cpu(seconds: float) -> list[subprocess.Popen]:
    """One busy loop per core, each ending on its own after `seconds`."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 2)]


def test_sigterm_on_a_busy_machine_stops_within_10_s_and_no_run_fails(stack):
    stack.up()
    instance = _instance(stack)
    try:
        wait_for(lambda: _runs(instance, job_name="stream_drain_job", statuses=[dg.DagsterRunStatus.STARTED]), 300,
                 "a drain consumer running", stack)
        analytics = _launch(stack, "analytics_job")  # the kind of run the issue saw marked FAILURE
        wait_for(lambda: instance.get_run_by_id(analytics).status != dg.DagsterRunStatus.QUEUED
                 and instance.get_run_by_id(analytics).status != dg.DagsterRunStatus.NOT_STARTED, 300,
                 "the analytics run to be launched", stack)
        going = {run.run_id: run.job_name for run in _runs(instance, statuses=IN_FLIGHT)}
        assert "stream_drain_job" in going.values()

        burners = _burn_cpu(120)
        try:
            time.sleep(1)  # the burners are busy before the signal
            started = time.monotonic()
            stack.proc.send_signal(signal.SIGTERM)
            code = stack.proc.wait(timeout=120)
            elapsed = time.monotonic() - started
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()
        stack.out.close()
        assert code == 0, _output(stack)
        # The budget, plus the instance's last look and the interpreter's exit: under docker stop's 10 s.
        assert elapsed < min(10.0, STOP_BUDGET_SECONDS + 1.5), (elapsed, _output(stack))
        assert stack.leftovers() == [] and stack.ports_free()

        runs = _runs(instance)
        assert not [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE], [(r.job_name, r.status) for r in runs]
        assert not [r for r in runs if r.status in IN_FLIGHT]
        for run_id, job in going.items():  # stopped runs end canceled, or a consumer hands over and succeeds
            assert instance.get_run_by_id(run_id).status in (dg.DagsterRunStatus.CANCELED,
                                                              dg.DagsterRunStatus.SUCCESS), job
        stopped = [line for line in _output(stack).splitlines() if " canceled" in line]
        assert all(re.match(r"^\d\d:\d\d:\d\d run \S+ [0-9a-f]{8} canceled", line) for line in stopped)

        # The next start drains again: a new consumer, not a back-off after a "failure".
        stack.up()
        users = range(970_001, 970_003)
        posted = set(stack.post(events(users, 3, "after")))
        wait_for(lambda: set().union(*(stack.downloads(u) for u in users)) >= posted, 300,
                 "events posted after the restart through GET", stack)
        assert stack.stop(signal.SIGTERM) == 0
        assert not [r for r in _runs(instance) if r.status == dg.DagsterRunStatus.FAILURE]
    finally:
        instance.dispose()
