"""`appdata demo` end to end, as a user runs it: its own emulator and API, exit 0 only if all reconciles."""

import subprocess
import sys

import pytest

from appdata.local.emulator import free_endpoints, free_port

pytestmark = pytest.mark.emulator  # the demo starts its own


def test_demo_reconciles_every_stage_and_builds_the_report(tmp_path):
    home = tmp_path / "home"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "APPDATA_HOME": str(home),
        **free_endpoints().environment(),
        "APPDATA_API_PORT": str(free_port()),
    }
    out = subprocess.run(
        [sys.executable, "-m", "appdata.cli", "demo", "--events", "600", "--invalid", "30", "--repeated", "60",
         "--days", "2"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "all stages reconcile" in text
    assert "batch_reconciled: green" in text and "stream_reconciled: green" in text
    stream = dict(line.split(None, 1) for line in text.splitlines() if line.startswith("  ") and
                  line.split()[0] in ("accepted", "rejected", "lake_distinct_events", "dynamodb_distinct_events",
                                      "warehouse_rows"))
    assert stream == {"accepted": "630", "rejected": "30", "lake_distinct_events": "570",
                      "dynamodb_distinct_events": "570", "warehouse_rows": "570"}
    assert (home / "reports" / "appdata_report.html").stat().st_size > 10_000
    assert (home / "api-key").exists()
