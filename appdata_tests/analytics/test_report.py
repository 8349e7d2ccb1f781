"""The analytics end to end (marts, recommendations, report via Dagster) and the page in Chromium."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from appdata.analytics import plots
from appdata.local.analytics_demo import run_analytics_demo
from appdata.analytics.report import build_report, report_path, write_report
from appdata.contract.layout import REPORT_KEY
from appdata.warehouse.loader import replace_all
from appdata_tests.support.analytics import generated, hand_made

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FIGURE_IDS = [f"chart-{key}" for key in plots.FIGURES]


def _load_demo_data(provisioned: dict) -> None:
    from appdata.sources.catalogue import clean_catalogue, load_catalogue

    apps, _ = clean_catalogue(load_catalogue(None, seed=7)[0])
    engine = provisioned["warehouse"].get_engine()
    batch, _ = hand_made()
    replace_all(engine, "downloads_batch", batch)
    replace_all(engine, "downloads_stream", generated(apps, "taste", users=400, days=8, rows=1500))
    engine.dispose()


def test_demo_materializes_every_analytics_asset_with_plots_and_hit_rates(provisioned: dict, appdata_env) -> None:
    import dagster as dg

    _load_demo_data(provisioned)
    instance = dg.DagsterInstance.ephemeral()
    headline = run_analytics_demo(appdata_env, instance=instance)
    for mart in ("mart_downloads_daily", "mart_audience", "mart_time_spent", "mart_charts"):
        assert headline[f"rows_{mart}"] > 0, mart
    assert headline["recommendation_users"] > 400  # stream users plus the hand-made batch users
    assert headline["hit_rate_at_10"] > headline["baseline_hit_rate_at_10"]
    assert headline["beats_baseline"] is True
    page = Path(headline["report_path"])
    assert page == report_path(appdata_env.home) and page.exists()
    html = page.read_text(encoding="utf-8")
    assert all(f'id="{figure}"' in html for figure in FIGURE_IDS)
    assert "<script src" not in html and "<link" not in html  # self-contained
    body = provisioned["s3"].get_client().get_object(Bucket=appdata_env.bucket, Key=REPORT_KEY)
    assert body["ContentType"].startswith("text/html")
    assert body["Body"].read().decode("utf-8") == html

    # What the Dagster UI shows: plots as inline PNGs, both hit rates.
    def metadata(name: str) -> dict:
        event = instance.get_latest_materialization_event(dg.AssetKey(name))
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}

    for mart in ("mart_downloads_daily", "mart_audience", "mart_time_spent", "mart_charts"):
        assert metadata(mart)["plot"].startswith("![") and "data:image/png;base64," in metadata(mart)["plot"]
    recs = metadata("user_recommendations")
    assert recs["hit_rate_at_10"] > recs["baseline_most_popular_hit_rate_at_10"]
    report_meta = metadata("analytics_report")
    for key in plots.FIGURES:
        uri = report_meta[f"figure_{key}"].split("(", 1)[1].rstrip(")")
        assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_warehouse_still_renders_a_report(duckdb_url: str, tmp_path: Path) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(duckdb_url, poolclass=sa.pool.NullPool)
    report = build_report(engine)
    assert set(report.images) == set(plots.FIGURES)
    assert report.headline["downloads"] == 0
    where = write_report(report, tmp_path)
    assert Path(where["path"]).read_text().count('class="chart"') == len(plots.FIGURES)


# -- headless Chromium ------------------------------------------------------------------------
class Browser:
    """Headless Chromium driven over the DevTools protocol (websockets, no browser download)."""

    def __init__(self, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        self.next_id = 0

    def open(self, url: str) -> dict:
        """Load `url`; return console errors, exceptions and every <img>'s decode state."""
        import httpx
        from websockets.sync.client import connect

        pages = httpx.get(f"http://127.0.0.1:{self.port}/json/list", timeout=10).json()
        page = next(p for p in pages if p["type"] == "page")
        errors: list[str] = []
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=20) as ws:
            def call(method: str, **params) -> dict:
                self.next_id += 1
                ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
                while True:
                    message = json.loads(ws.recv(timeout=60))
                    self._collect(message, errors)
                    if message.get("id") == self.next_id:
                        return message.get("result", {})
                    if message.get("method") == "Page.loadEventFired":
                        self.loaded = True

            for domain in ("Page", "Runtime", "Log"):
                call(f"{domain}.enable")
            self.loaded = False
            call("Page.navigate", url=url)
            while not self.loaded:
                message = json.loads(ws.recv(timeout=60))
                self._collect(message, errors)
                self.loaded = message.get("method") == "Page.loadEventFired"
            script = ("Promise.all(Array.from(document.images).map(i => i.decode().then(() => true, () => false)"
                      ".then(ok => ({id: i.id, ok, w: i.naturalWidth, h: i.naturalHeight}))))")
            images = call("Runtime.evaluate", expression=script, awaitPromise=True, returnByValue=True)
            title = call("Runtime.evaluate", expression="document.title", returnByValue=True)
            # Let late console messages arrive.
            call("Runtime.evaluate", expression="new Promise(r => setTimeout(r, 200))", awaitPromise=True)
        return {"errors": errors, "images": images["result"]["value"], "title": title["result"]["value"]}

    @staticmethod
    def _collect(message: dict, errors: list[str]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            errors.append("exception: " + params["exceptionDetails"].get("text", ""))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append("log: " + params["entry"].get("text", ""))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Browser:
    if not CHROMIUM.exists():
        reason = "headless Chromium test needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(reason + "; CI must install it")
        pytest.skip(reason)
    chrome = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chrome
    chrome.close()


def test_report_page_loads_in_chromium_with_every_chart(browser: Browser, duckdb_url: str, tmp_path: Path) -> None:
    import sqlalchemy as sa

    from appdata.analytics.marts import build_all_marts
    from appdata.warehouse.loader import create_schema

    engine = sa.create_engine(duckdb_url, poolclass=sa.pool.NullPool)
    create_schema(engine)
    batch, stream = hand_made()
    replace_all(engine, "downloads_batch", batch)
    replace_all(engine, "downloads_stream", stream)
    build_all_marts(engine)
    page = Path(write_report(build_report(engine), tmp_path)["path"])

    seen = browser.open(page.as_uri())
    assert seen["errors"] == []
    assert seen["title"].startswith("appdata")
    by_id = {image["id"]: image for image in seen["images"]}
    assert sorted(by_id) == sorted(FIGURE_IDS)
    for figure in FIGURE_IDS:
        assert by_id[figure]["ok"] and by_id[figure]["w"] > 100 and by_id[figure]["h"] > 100, by_id[figure]


def test_the_browser_check_catches_a_broken_page(browser: Browser, tmp_path: Path) -> None:
    """The checks above can fail: a broken image and a console error are both seen."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>broken</title></head><body>'
                    '<img id="chart-x" src="data:image/png;base64,AAAA">'
                    '<script>console.error("boom")</script></body></html>')
    seen = browser.open(page.as_uri())
    assert any("boom" in error for error in seen["errors"])
    assert seen["images"] == [{"id": "chart-x", "ok": False, "w": 0, "h": 0}]
