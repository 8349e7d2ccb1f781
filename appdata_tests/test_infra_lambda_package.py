"""`appdata package-lambda`: the zip holds the API and its Lambda-platform wheels, fits Lambda's
limit, and serves API Gateway events with nothing but itself and the runtime's boto3.

Downloads wheels from PyPI, hence opt-in: APPDATA_TEST_PACKAGING=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from appdata.infra import LAMBDA_PYTHON, LAMBDA_UNZIPPED_LIMIT, runtime_provided_paths
from appdata_tests.support.api import proxy_event

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("APPDATA_TEST_PACKAGING") != "1",
                       reason="downloads wheels; set APPDATA_TEST_PACKAGING=1"),
]

SMOKE = """
import json, sys
from appdata.infra import lambda_handler
for event in json.loads(sys.stdin.read()):
    response = lambda_handler(event, None)
    print(json.dumps({"status": response["statusCode"], "body": response["body"][:300]}))
import appdata.api.app
print(json.dumps({"dagster_loaded": "dagster" in sys.modules, "pandas": sys.modules["pandas"].__file__}))
"""


def _interpreter(version: str) -> str | None:
    """A working python<version> here (PATH, else pyenv's installs), or None."""
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}"))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def test_package_builds_fits_and_serves_from_the_zip_alone(appdata_env, provisioned, tmp_path):
    from appdata.cli.infra import package_lambda

    output = tmp_path / "dist" / "lambda.zip"
    result = CliRunner().invoke(package_lambda, ["--output", str(output)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "MB unzipped" in result.output

    with zipfile.ZipFile(output) as archive:
        names = archive.namelist()
        unzipped = sum(info.file_size for info in archive.infolist())
        archive.extractall(tmp_path / "tree")
    tops = {name.split("/")[0] for name in names}
    assert {"appdata", "fastapi", "mangum", "pydantic", "pandas", "numpy"} <= tops
    assert "appdata/api/lambda_handler.py" in names and "appdata/infra.py" in names
    assert not {"boto3", "botocore"} & tops, "boto3 comes with the Lambda runtime"
    assert not any("__pycache__" in name for name in names)
    abi = LAMBDA_PYTHON.replace(".", "")
    assert any(name.endswith(f".cpython-{abi}-x86_64-linux-gnu.so") for name in names)  # the runtime's wheels
    assert unzipped < LAMBDA_UNZIPPED_LIMIT

    # Only the zip and the runtime's boto3 on the path (python -S: no site-packages), on the
    # runtime's Python version.
    interpreter = _interpreter(LAMBDA_PYTHON)
    if interpreter is None:
        pytest.skip(f"no python{LAMBDA_PYTHON} here to import the package with")
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    for path in runtime_provided_paths():
        (runtime / path.name).symlink_to(path)
    events = [proxy_event("GET", "/healthz"),
              proxy_event("GET", "/v1/users/1/downloads", headers={"x-api-key": os.environ["APPDATA_API_KEYS"]})]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    code = f"import sys; sys.path[:0] = [{str(tmp_path / 'tree')!r}, {str(runtime)!r}]\n" + SMOKE
    run = subprocess.run([interpreter, "-S", "-c", code], input=json.dumps(events), capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines[0]["status"] == 200, run.stdout + run.stderr[-4000:]
    assert lines[1]["status"] == 404  # no such user yet: the route ran against DynamoDB
    assert lines[2]["pandas"].startswith(str(tmp_path / "tree"))
