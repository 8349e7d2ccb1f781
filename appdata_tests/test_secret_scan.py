"""The CI secret scan passes on this repository and fails on a planted secret."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appdata_tests.support.reliability import report

pytestmark = pytest.mark.reliability

REPO = Path(__file__).resolve().parents[1]
SCAN = REPO / ".ci" / "secret_scan"


def _scan(repo: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(["bash", str(SCAN), str(repo)], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture()
def scratch_repo(tmp_path: Path) -> Path:
    if not shutil.which("git"):
        pytest.skip("git not installed")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "settings.py").write_text('REGION = "us-east-1"\n')
    return tmp_path


def _track(repo: Path) -> None:
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)


def test_scan_fails_on_a_planted_aws_key_and_passes_without_it(scratch_repo: Path):
    _track(scratch_repo)
    clean = _scan(scratch_repo)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    # Built at run time so that this file itself holds no secret-shaped literal.
    key_id = "AKIA" + "Z7QK3VMD2XLT4PWE"
    secret = "wJalr" + "XUtnFEMI/K7MDENG/bPxRfiCYzq3Lq8DeWx"  # pragma: allowlist secret
    (scratch_repo / "settings.py").write_text(f'AWS_ACCESS_KEY_ID = "{key_id}"\naws_secret_access_key = "{secret}"\n')
    _track(scratch_repo)
    dirty = _scan(scratch_repo)
    assert dirty.returncode == 1, dirty.stdout + dirty.stderr
    assert "settings.py:1: AWS Access Key" in dirty.stdout
    report("secret scan", planted="AWS access key + secret", found=dirty.stdout.count("settings.py:"))


def test_repository_has_no_secrets():
    result = _scan(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no secrets in tracked files" in result.stdout
