"""The one answer to "where is the real Kaggle file" (appdata_tests/support/realdata.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appdata_tests.support import realdata

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A fake ../shared file and a fake APPDATA_PLAYSTORE_CSV file, neither set or created yet."""
    shared = tmp_path / "shared" / "data" / "googleplaystore.csv"
    mine = tmp_path / "mine" / "playstore.csv"
    monkeypatch.setattr(realdata, "SHARED_CATALOGUE", shared)
    monkeypatch.setattr(realdata, "_ENV_AT_START", "")
    monkeypatch.delenv(realdata.ENV_VAR, raising=False)
    return {"shared": shared, "mine": mine}


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("App,Category\n")
    return path


def test_the_variable_wins_over_shared(places, monkeypatch):
    _touch(places["shared"])
    monkeypatch.setenv(realdata.ENV_VAR, str(_touch(places["mine"])))
    assert realdata.real_catalogue_path() == places["mine"]


def test_shared_when_the_variable_is_unset_or_names_no_file(places, monkeypatch):
    _touch(places["shared"])
    assert realdata.real_catalogue_path() == places["shared"]
    monkeypatch.setenv(realdata.ENV_VAR, str(places["mine"]))  # set, but no such file
    assert realdata.real_catalogue_path() == places["shared"]


def test_the_variable_as_the_session_started_survives_a_test_environment(places, monkeypatch):
    """The test environments unset APPDATA_PLAYSTORE_CSV; the file it named is still found."""
    monkeypatch.setattr(realdata, "_ENV_AT_START", str(_touch(places["mine"])))
    assert realdata.real_catalogue_path() == places["mine"]


def test_none_and_a_reason_naming_both_places_when_absent(places, monkeypatch):
    assert realdata.real_catalogue_path() is None
    reason = realdata.missing_reason()
    assert "APPDATA_PLAYSTORE_CSV (unset)" in reason and str(places["shared"]) in reason
    monkeypatch.setenv(realdata.ENV_VAR, str(places["mine"]))
    assert realdata.real_catalogue_path() is None
    reason = realdata.missing_reason()
    assert f"APPDATA_PLAYSTORE_CSV={places['mine']} (no such file)" in reason and str(places["shared"]) in reason


def test_the_default_place_is_next_to_the_repository():
    assert realdata.SHARED_CATALOGUE == REPO_ROOT.parent / "shared" / "data" / "googleplaystore.csv"


def test_no_other_test_file_knows_where_the_real_file_is():
    """Every real-data test goes through the `real_catalogue` fixture or realdata.real_catalogue_path():
    no other test file builds a path with a "shared" component."""
    mine = {REPO_ROOT / "appdata_tests" / "support" / "realdata.py", Path(__file__).resolve()}
    offenders = [str(p.relative_to(REPO_ROOT)) for p in sorted((REPO_ROOT / "appdata_tests").rglob("*.py"))
                 if p not in mine and ('"shared"' in p.read_text() or "'shared'" in p.read_text())]
    assert offenders == []


def test_real_catalogue_fixture_marks_the_test_realdata(request):
    """A test taking the real file gets `-m realdata` from the fixture (conftest.py), marked or not."""
    from appdata_tests import conftest

    assert conftest.SERVER_MARKERS["real_catalogue"] == "realdata"
