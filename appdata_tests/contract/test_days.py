"""A day in a filter is exactly YYYY-MM-DD, at every door that takes one: the CLI's options and the
API's query parameters refuse ISO 8601's other forms (which date.fromisoformat reads in 3.11),
naming the parameter."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from appdata.contract.days import parse_day

REFUSED = ["20201231", "2020-W01-1", "2020W011", "2020-366", "2020-12-31T00:00", "2020-12-31 ", " 2020-12-31",
           "2020-1-31", "２０２０-12-31", "2021-02-29", "0000-01-01", "", "yesterday"]


def test_only_yyyy_mm_dd_is_a_day():
    assert parse_day("2020-12-31") == dt.date(2020, 12, 31) and parse_day("2020-02-29") == dt.date(2020, 2, 29)
    assert dt.date.fromisoformat("20201231") and dt.date.fromisoformat("2020-W01-1")  # what Python alone takes
    for text in REFUSED:
        with pytest.raises(ValueError, match="must be a date YYYY-MM-DD"):
            parse_day(text)


@pytest.mark.parametrize("args, option", [
    (["reconcile", "--start", "20201231"], "--start"),
    (["reconcile", "--end", "2020-W01-1"], "--end"),
    (["rejected", "list", "--date", "2020-W01-1"], "--date"),
    (["batch-demo", "--start", "20200301"], "--start"),
])
def test_every_cli_day_option_refuses_other_forms_naming_itself(args, option):
    from appdata.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}': must be a date YYYY-MM-DD, got '{args[-1]}'" in result.output


@pytest.mark.parametrize("path", ["/dashboard/data/overview", "/v1/analytics/overview"])
def test_the_apis_date_parameters_refuse_other_forms_naming_themselves(tmp_path, path):
    from appdata.api.app import create_app
    from appdata.config import Settings

    settings = dataclasses.replace(Settings.from_env(), home=tmp_path, warehouse_url=f"duckdb:///{tmp_path}/w.duckdb")
    with TestClient(create_app(settings, api_keys=["key"])) as api:
        for name, value in (("start", "20201231"), ("end", "2020-W01-1")):
            answer = api.get(path, params={name: value}, headers={"x-api-key": "key"})
            assert answer.status_code == 422, (path, name, answer.text)
            assert answer.json() == {"detail": f"{name}: must be a date YYYY-MM-DD", "field": name}
