"""The dashboard in a real browser: Playwright driving Debian's chromium (/usr/bin/chromium).

Every filter is changed and the numbers the page shows are compared with SQL on the download
tables; the per-app page is opened; a table is downloaded as CSV; the console stays clean. Two
negative controls prove the checks can fail: numbers tampered on the wire are caught, and so is
a script error. Screenshots go to /tmp/dash-overview.png and /tmp/dash-app.png.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from appdata.analytics.dashboard import UNKNOWN_CATEGORY
from appdata.analytics.privacy import DEFAULT_K
from appdata.analytics.marts import ALL_DOWNLOADS, age_band_case
from appdata.config import Settings
from appdata.local.emulator import free_port
from appdata_tests.analytics.test_dashboard import FORMULA_APP, load_dashboard_data
from appdata_tests.support.analytics import hand_made, load_warehouse

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SCREENSHOTS = Path("/tmp")
COLUMNS = {"category": "category", "app": "app", "state": "location", "age_band": "age_band"}


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        reason = "the browser test needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(reason + "; CI must install it")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@contextlib.contextmanager
def serving(home: Path, load):
    """The API on a free port over a DuckDB warehouse that `load(url)` fills; (base URL, engine)."""
    import uvicorn

    from appdata.api.app import create_app

    url = f"duckdb:///{home / 'warehouse.duckdb'}"
    engine = load(url)
    settings = dataclasses.replace(Settings.from_env(), home=home, warehouse_url=url)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, api_keys=["k"]), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", engine
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """The API over the generated dashboard data, marts built; (base URL, engine)."""
    with serving(tmp_path_factory.mktemp("dash-home"), load_dashboard_data) as both:
        yield both


@pytest.fixture(scope="module")
def served_small(tmp_path_factory: pytest.TempPathFactory):
    """The API over the hand-made data: 6 users, no app of 5 (the first quarter hour of a fresh stack)."""
    with serving(tmp_path_factory.mktemp("dash-small"),
                 lambda url: load_warehouse(url, *hand_made(), build_marts=True)) as both:
        yield both


class Page:
    """One browser tab on the dashboard, with every console error and page error it raised."""

    def __init__(self, browser, base: str) -> None:
        self.context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def open(self, path: str) -> None:
        self.page.goto(self.base + path)
        self.ready()

    def ready(self) -> None:
        self.page.wait_for_function("document.body.dataset.state === 'ready' || document.body.dataset.state === 'empty'",
                                    timeout=30_000)

    def change(self, action) -> None:
        """Do `action` (which changes a filter) and wait for the page to redraw."""
        self.page.evaluate("document.body.dataset.state = 'stale'")
        action()
        self.ready()

    def totals(self) -> tuple[int | None, int | None]:
        def number(selector: str) -> int | None:
            text = self.page.inner_text(selector).replace(",", "")
            return None if text == "–" else int(text)
        return number("#total-downloads"), number("#total-users")

    def table(self, key: str) -> list[list[str]]:
        return self.page.eval_on_selector_all(
            f"#table-{key} tbody tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.dataset.value))")

    def close(self) -> None:
        self.context.close()


def sql_totals(engine: sa.Engine, **filters) -> tuple[int | None, int | None]:
    """Downloads and distinct users straight from the download tables; (None, None) under k users."""
    clauses, params = ["1 = 1"], {}
    for name, value in filters.items():
        if name == "start":
            clauses.append("d.download_date >= :start")
        elif name == "end":
            clauses.append("d.download_date <= :end")
        else:
            clauses.append(f"d.{COLUMNS[name]} = :{name}")
        params[name] = value
    sql = (f"SELECT COUNT(*), COUNT(DISTINCT d.user_id) FROM (SELECT x.*, {age_band_case('x.age')} AS age_band "
           f"FROM {ALL_DOWNLOADS} x) d WHERE {' AND '.join(clauses)}")
    with engine.connect() as conn:
        downloads, users = conn.execute(sa.text(sql), params).one()
    return (int(downloads), int(users)) if users >= DEFAULT_K else (None, None)


def check_totals(page: Page, engine: sa.Engine, **filters) -> None:
    assert page.totals() == sql_totals(engine, **filters), filters


def test_dashboard_filters_match_sql_per_app_page_csv_and_no_console_errors(chromium, served, tmp_path) -> None:
    base, engine = served
    page = Page(chromium, base)
    page.open("/dashboard")
    check_totals(page, engine)
    options = page.page.eval_on_selector_all("#f-category option", "os => os.map(o => o.value).filter(Boolean)")
    assert options[-1] == UNKNOWN_CATEGORY and options[0] != UNKNOWN_CATEGORY
    assert page.page.locator("#chart-over_time .main-svg").count() > 0  # Plotly drew
    assert "mart_download_facts" in page.page.inner_text("#freshness")

    # Each filter alone, then back to all.
    for name in ("category", "app", "state", "age_band"):
        values = page.page.eval_on_selector_all(f"#f-{name} option", "os => os.map(o => o.value).filter(Boolean)")
        value = values[0]
        page.change(lambda: page.page.select_option(f"#f-{name}", value))
        check_totals(page, engine, **{name: value})
        assert parse_qs(urlsplit(page.page.url).query)[name] == [value]
        page.change(lambda: page.page.select_option(f"#f-{name}", ""))
        check_totals(page, engine)
    # A date range with a category: the table beside the chart matches SQL too.
    start, end = "2024-01-01", "2024-01-04"
    page.change(lambda: page.page.fill("#f-start", start))
    check_totals(page, engine, start=start)
    page.change(lambda: page.page.fill("#f-end", end))
    category = options[0]
    page.change(lambda: page.page.select_option("#f-category", category))
    check_totals(page, engine, start=start, end=end, category=category)
    for row in page.table("by_state"):
        state, downloads, users = row[0], int(row[1]), int(row[2])
        assert (downloads, users) == sql_totals(engine, start=start, end=end, category=category, state=state)

    # The CSV is what the table shows.
    with page.page.expect_download() as download:
        page.page.click("#csv-by_state")
    saved = tmp_path / "by_state.csv"
    download.value.save_as(saved)
    rows = list(csv.reader(io.StringIO(saved.read_text())))
    assert rows[0] == ["state", "downloads", "users"] and rows[1:] == page.table("by_state") and rows[1:]

    # A name a spreadsheet would run: the CSV cell is quoted text ('=...), the page shows it as is.
    page.change(lambda: page.page.select_option("#f-category", ""))
    page.change(lambda: page.page.select_option("#f-app", FORMULA_APP))
    assert [row[0] for row in page.table("top_apps")] == [FORMULA_APP]
    with page.page.expect_download() as download:
        page.page.click("#csv-top_apps")
    download.value.save_as(tmp_path / "top_apps.csv")
    rows = list(csv.reader(io.StringIO((tmp_path / "top_apps.csv").read_text())))
    assert rows[1][0] == "'" + FORMULA_APP and rows[1][1:] == page.table("top_apps")[0][1:]
    page.change(lambda: page.page.select_option("#f-app", ""))
    page.page.screenshot(path=str(SCREENSHOTS / "dash-overview.png"), full_page=True)

    # The per-app page, from the top-apps table.
    app = page.table("top_apps")[0][0]
    page.page.click(f"#table-top_apps a:text-is({app!r})")
    page.page.wait_for_url("**/dashboard/app?app=*")
    page.ready()
    assert page.page.inner_text("#app-name") == app
    check_totals(page, engine, app=app, start=start, end=end)  # the date range follows to the app page
    page.change(lambda: page.page.fill("#f-start", ""))
    page.change(lambda: page.page.fill("#f-end", ""))
    check_totals(page, engine, app=app)
    for key in ("over_time", "by_age_band", "by_state", "time_spent", "also_downloaded"):
        assert page.page.locator(f"#panel-{key}").count() == 1, key
    assert page.page.locator("#chart-by_age_band .main-svg").count() > 0
    page.page.screenshot(path=str(SCREENSHOTS / "dash-app.png"), full_page=True)
    assert page.errors == []
    page.close()


def test_the_checks_fail_on_tampered_numbers_and_on_a_script_error(chromium, served) -> None:
    """Negative controls: the same comparison against numbers altered on the wire must fail, and
    an error thrown in the page must be seen."""
    import json

    base, engine = served
    page = Page(chromium, base)

    def tamper(route) -> None:
        body = route.fetch().json()
        body["totals"]["downloads"] += 1
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.page.route("**/dashboard/data/overview*", tamper)
    page.open("/dashboard")
    with pytest.raises(AssertionError):
        check_totals(page, engine)
    assert page.errors == []

    page.page.unroute("**/dashboard/data/overview*")
    page.page.add_init_script("window.addEventListener('DOMContentLoaded', () => { throw new Error('injected'); })")
    page.open("/dashboard")
    check_totals(page, engine)
    assert any("injected" in error for error in page.errors), page.errors
    page.close()


def test_empty_panels_and_pages_say_why_and_nothing_stays_loading(chromium, served_small) -> None:
    """Six users: every empty panel gives its reason; the page of an app under k users, and of an
    app with no downloads, names the app and says why, with no "Loading…" left anywhere."""
    base, _ = served_small
    page = Page(chromium, base)
    page.open("/dashboard")
    assert page.page.inner_text("#chart-top_apps") == "No app has reached 5 users yet: 7 groups withheld for privacy."
    assert page.page.inner_text("#chart-by_category").startswith("Withheld for privacy: showing the 1 category")
    assert "mart_download_facts" in page.page.inner_text("#freshness")
    for name, heading, status in (
        ("Chess", "Chess", "'Chess' has not reached 5 users yet: apps with fewer are not published, for privacy."),
        ("Nope", "Nope", "No downloads of 'Nope' yet."),
    ):
        page.open("/dashboard/app?app=" + name)
        assert page.page.inner_text("#app-name") == heading
        assert page.page.inner_text("#status") == status
        assert "Loading" not in page.page.inner_text("header") + page.page.inner_text("#status")
        assert page.page.evaluate("document.body.dataset.state") == "empty"
    page.page.screenshot(path=str(SCREENSHOTS / "dash-app-empty.png"), full_page=True)
    # The 404s are the answers themselves; anything else in the console is a fault.
    assert [e for e in page.errors if "status of 404" not in e] == []
    page.close()


def test_a_failed_request_is_said_and_never_leaves_loading(chromium, served_small) -> None:
    base, _ = served_small
    page = Page(chromium, base)
    page.page.route("**/dashboard/data/app*", lambda route: route.abort())
    page.open("/dashboard/app?app=Chess")
    assert page.page.inner_text("#app-name") == "Chess"
    assert page.page.inner_text("#status").startswith("Could not load the data")
    assert "Loading" not in page.page.inner_text("header")
    page.close()
