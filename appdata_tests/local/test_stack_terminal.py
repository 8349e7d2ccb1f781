"""What `appdata up` prints, piece by piece, on real output shapes: a child's tracebacks become one
line per distinct exception (the log keeps the first in full), a problem repeated with other
numbers is one line, and run ends come from a real Dagster instance (a run whose check fails
prints as such, a failed run names its root cause). No server: the unit tier."""

from __future__ import annotations

import uuid

import botocore.exceptions
import click
import dagster as dg
import pytest

from appdata.cli.reliability import aws_failure, exit_on_aws_errors
from appdata.local.stack import LogCompactor, RunWatcher, TerminalFilter

WERKZEUG_500 = """Error on request:
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/werkzeug/serving.py", line 374, in run_wsgi
    execute(self.server.app)
  File "/venv/lib/python3.11/site-packages/moto/kinesis/models.py", line {line}, in get_records
    return records, last, int(behind * 1000)
                          ^^^^^^^^^^^^^^^^^^
TypeError: unsupported operand type(s) for *: 'datetime.timedelta' and 'int'
127.0.0.1 - - [07/Dec/2026 22:41:07] "POST / HTTP/1.1" 500 -
"""

CHAINED = """Traceback (most recent call last):
  File "a.py", line 1, in <module>
KeyError: 'x'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "a.py", line 3, in <module>
ValueError: bad value 17
"""


def _feed(show, text: str) -> list[str]:
    return [line for line in (show(raw) for raw in text.splitlines(keepends=True)) if line is not None]


def test_a_childs_tracebacks_are_one_line_per_distinct_exception():
    show = TerminalFilter("emulator", log_hint="logs/emulator.log")
    printed = []
    for n in range(3_630 // 8):  # the incident: every GetRecords answered 500 with this traceback
        printed += _feed(show, WERKZEUG_500.format(line=300 + n % 3))
    assert printed == [
        "[emulator] TypeError: unsupported operand type(s) for *: 'datetime.timedelta' and 'int' "
        "(traceback in logs/emulator.log)",
        '[emulator] 127.0.0.1 - - [07/Dec/2026 22:41:07] "POST / HTTP/1.1" 500 -',
    ]
    assert not any("File " in line or "Traceback" in line for line in printed)
    chained = _feed(TerminalFilter("api"), CHAINED * 5)
    assert chained == ["[api] KeyError: 'x'", "[api] ValueError: bad value 17"]


def test_the_log_keeps_the_first_traceback_of_a_kind_and_one_line_for_each_repeat():
    compact = LogCompactor()
    written = []
    for n in range(4):
        for raw in WERKZEUG_500.format(line=300 + n).splitlines(keepends=True):
            written += compact(raw)
    written += compact.flush()
    text = "".join(written)
    assert text.count("Traceback (most recent call last)") == 1 and text.count("File ") == 2
    assert text.count("Error on request:") == 4 and text.count('" 500 -') == 4
    assert "(traceback 4 of this kind, frames as logged the first time) TypeError: unsupported" in text
    other = "".join(line for raw in CHAINED.splitlines(keepends=True)[:3] for line in compact(raw))  # in full
    assert "KeyError" in other and "File " in other


SENSOR = ("2026-12-07 22:{minute:02d}:{second:02d} +0000 - dagster.daemon.SensorDaemon - WARNING - "
          "kinesis_drain_sensor - shardId-000000000000: consumer run {run} failure (attempt {attempt}); "
          "next consumer in {wait}s\n")


def test_a_sensor_repeating_a_problem_every_tick_is_one_line():
    show = TerminalFilter("dagster", runs_from_instance=True)
    printed = []
    for tick in range(140):  # 23 minutes of ticks every 10 s
        printed += _feed(show, SENSOR.format(minute=18 + tick // 6, second=tick % 6 * 10, run=f"{tick // 30:08x}",
                                             attempt=1 + tick // 30, wait=300 - tick % 30 * 10))
    assert len(printed) == 1 and "failure (attempt 1)" in printed[0]


RUN_LINES = """2026-12-07 22:41:05 +0000 - dagster - DEBUG - stream_delivery_check_job - 1a2b3c4d-0000-4000-8000-000000000001 - RUN_START - Started execution of run for "stream_delivery_check_job".
2026-12-07 22:41:07 +0000 - dagster - ERROR - stream_drain_job - 1a2b3c4d-0000-4000-8000-000000000002 - stream_drain - STEP_FAILURE - Execution of step "stream_drain" failed.

botocore.exceptions.ClientError: An error occurred (500) when calling the GetRecords operation

Stack Trace:
  File "/venv/lib/python3.11/site-packages/dagster/_core/execution/plan/utils.py", line 57, in op_execution_error_boundary
    yield
2026-12-07 22:41:07 +0000 - dagster - ERROR - stream_drain_job - 1a2b3c4d-0000-4000-8000-000000000002 - RUN_FAILURE - Execution of run for "stream_drain_job" failed. Steps failed: ['stream_drain'].
2026-12-07 22:41:08 +0000 - dagster - WARNING - stream_drain_job - 1a2b3c4d-0000-4000-8000-000000000003 - stream_drain - shardId-000000000000: recommendations not refreshed for 12 users
"""


def test_run_events_and_run_errors_are_left_to_the_instance_watcher():
    printed = _feed(TerminalFilter("dagster", runs_from_instance=True), RUN_LINES)
    assert printed == ["22:41:08 [dagster] WARNING stream_drain_job - 1a2b3c4d-0000-4000-8000-000000000003 - "
                       "stream_drain - shardId-000000000000: recommendations not refreshed for 12 users"]
    without = _feed(TerminalFilter("dagster"), RUN_LINES)  # `--no-ui` first materialization: from the lines
    assert without[0] == "22:41:05 run stream_delivery_check_job 1a2b3c4d started"
    assert "22:41:07 run stream_drain_job 1a2b3c4d FAILED" in without


@dg.asset(name="downloads_stream")
def _sink():
    return 1


@dg.asset_check(asset=_sink, name="stream_client_delivered")
def _delivered():
    return dg.AssetCheckResult(passed=False, description="2,100 of 2,100 client events accepted over 120 s ago "
                               "are NOT in downloads_stream: ev-1, ev-2, ...")


@dg.asset(name="stream_lake")
def _drain():
    raise botocore.exceptions.ClientError(
        {"Error": {"Code": "500", "Message": "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error"}},
        "GetRecords")


@dg.asset(name="kinesis_typo")
def _wrong_shard():
    raise dg.Failure(description="shard shardId-9 is not in stream appdata-downloads")


DEFS = dg.Definitions(assets=[_sink, _drain, _wrong_shard], asset_checks=[_delivered], jobs=[
    dg.define_asset_job("stream_delivery_check_job", selection=dg.AssetSelection.assets(_sink)),
    dg.define_asset_job("stream_drain_job", selection=[_drain]),
    dg.define_asset_job("other_job", selection=[_wrong_shard]),
])


def test_run_ends_come_from_the_instance_with_failing_checks_and_root_causes(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    printed: list[str] = []
    with dg.instance_for_test(temp_dir=str(tmp_path)) as before:  # a run that ended before the stack started
        DEFS.resolve_job_def("other_job").execute_in_process(instance=before, raise_on_error=False)
    watcher = RunWatcher(tmp_path, printed.append)
    for job in ("stream_delivery_check_job", "stream_drain_job", "other_job"):
        DEFS.resolve_job_def(job).execute_in_process(instance=watcher.instance, raise_on_error=False)
    assert watcher.poll() == printed and watcher.poll() == []  # each end once
    ok, drain, other = (line.split(" ", 1)[1] for line in printed)
    assert ok.startswith("run stream_delivery_check_job ") and ok.endswith(
        " succeeded, check stream_client_delivered FAILED: 2,100 of 2,100 client events accepted over 120 s ago "
        "are NOT in downloads_stream: ev-1, ev-2, ...")
    assert drain.endswith(" FAILED: step stream_lake: ClientError: An error occurred (500) when calling the "
                          "GetRecords operation: (an HTML error page)")
    assert other.endswith(" FAILED: step kinesis_typo: shard shardId-9 is not in stream appdata-downloads")
    watcher.close()


def test_an_unreadable_instance_is_one_line_not_a_traceback(tmp_path):
    (tmp_path / "dagster.yaml").write_text("storage: [not, a, mapping]\n")
    printed: list[str] = []
    watcher = RunWatcher(tmp_path, printed.append)
    assert watcher.poll() == [] and watcher.poll() == []
    assert len(printed) == 1 and printed[0].startswith("[runs] cannot read run ends from the Dagster instance")


def test_aws_errors_end_a_command_with_one_line():
    wrapped = RuntimeError("Error occurred while executing op")  # as Dagster wraps what a step raised
    wrapped.__cause__ = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:4568/")
    assert aws_failure(wrapped) == ('EndpointConnectionError: Could not connect to the endpoint URL: '
                                    '"http://127.0.0.1:4568/"')
    assert aws_failure(RuntimeError("not AWS")) is None
    with pytest.raises(click.ClickException, match=r"^reconcile stopped: an AWS call failed: Endpoint"):
        with exit_on_aws_errors("reconcile"):
            raise wrapped
    with pytest.raises(RuntimeError):
        with exit_on_aws_errors("reconcile"):
            raise RuntimeError("a bug is still a traceback")


def test_an_asset_run_is_named_by_its_assets(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    printed: list[str] = []
    watcher = RunWatcher(tmp_path, printed.append)
    DEFS.resolve_implicit_global_asset_job_def().execute_in_process(  # as the automation sensor's runs
        instance=watcher.instance, asset_selection=[dg.AssetKey("downloads_stream")])
    (line,) = watcher.poll()
    assert line.split(" ", 1)[1].startswith("run downloads_stream "), line  # not "__ASSET_JOB"
    watcher.close()


def test_the_stop_cancels_the_stacks_runs_only_and_finishes_those_left_without_an_end(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    printed: list[str] = []
    watcher = RunWatcher(tmp_path, printed.append)
    instance = watcher.instance
    launched = {"dagster/code_location": "appdata"}

    def run(status: str, tags: dict) -> str:
        added = instance.add_run(dg.DagsterRun(job_name="stream_drain_job", run_id=str(uuid.uuid4()),
                                               status=dg.DagsterRunStatus[status], tags=tags))
        return added.run_id

    started, starting, ended = run("STARTED", launched), run("STARTING", launched), run("SUCCESS", launched)
    demo = run("STARTED", {"appdata/demo": "analytics"})  # another process's in-process run: not the stop's
    assert watcher.settled() is False
    assert watcher.cancel_in_flight() == 2
    assert {instance.get_run_by_id(r).status.value for r in (started, starting)} == {"CANCELING"}
    assert watcher.settled() is False  # a CANCELING run may still record its end
    assert watcher.finish_in_flight() == 2  # their processes are gone: canceled for them
    assert watcher.settled() is True
    status = {r: instance.get_run_by_id(r).status.value for r in (started, starting, ended, demo)}
    assert status == {started: "CANCELED", starting: "CANCELED", ended: "SUCCESS", demo: "STARTED"}
    assert not any(" FAILED" in line for line in watcher.poll())
    watcher.close()


def test_dagsters_stack_traces_are_written_once_too():
    compact = LogCompactor()
    written = []
    for _ in range(3):
        for raw in RUN_LINES.splitlines(keepends=True):
            written += compact(raw)
    written += compact.flush()
    text = "".join(written)
    assert text.count("Stack Trace:") == 1 and text.count("op_execution_error_boundary") == 1
    assert text.count("(traceback 3 of this kind, frames as logged the first time) a Dagster stack trace") == 1
    assert text.count("STEP_FAILURE") == 3 and text.count("RUN_FAILURE") == 3  # the lines after each block stay
