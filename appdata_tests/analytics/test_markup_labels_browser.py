"""Ingested text is shown, never interpreted: app names carrying each markup family Plotly (and
matplotlib) understand are POSTed through the ingest API, drained, built into the marts and the
report, and headless Chromium opens /dashboard, /dashboard/app and /report. No chart holds an
anchor, a styled span or a line break made from a label, and each label reads as it was sent. A
negative control serves the dashboard's script with the escaping helper bypassed and sees the
same check fail. Markup in category, location or content_rating is refused at the door (closed
domains of the contract)."""

from __future__ import annotations

import os
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa

from appdata.analytics import marts
from appdata.analytics.privacy import DEFAULT_K
from appdata.analytics.report import build_report, write_report
from appdata.defs.resources import build_resources
from appdata_tests.analytics.test_dashboard_browser import Page, chromium  # noqa: F401 (fixture)
from appdata_tests.support.api import LocalApi, post
from appdata_tests.support.events import make_event
from appdata_tests.support.stream import drain_all

# One app name per markup family; "Mk" marks every label the check looks at.
MARKUP_APPS = (
    'Mk1 <a href="https://evil.example/x" target="_blank">Evil link</a>',
    'Mk2 <a href="javascript:alert(1)">Script link</a>',
    'Mk3 <span style="font-size:60px;color:red">Big red</span>',
    "Mk4 <b>bold</b> <i>italic</i> <sup>up</sup><sub>down</sub>",
    "Mk5 line<br>break<br/>twice",
    "Mk6 AT&T &amp; &lt;entities&gt; &#60;b&#62;",
    "Mk7 $x^2$ $\\foo$",  # matplotlib mathtext: \\foo fails a whole figure
)
OPEN_CHECK = """() => {
  const texts = Array.from(document.querySelectorAll('.js-plotly-plot svg text'))
    .filter(t => t.textContent.includes('Mk'));
  return {
    anchors: Array.from(document.querySelectorAll('.js-plotly-plot svg a')).map(a => a.outerHTML),
    shaped: texts.filter(t => t.querySelector('tspan, a')).map(t => t.innerHTML),
    texts: texts.map(t => t.textContent),
  };
}"""


@pytest.fixture(scope="module")
def posted(module_env):
    """The markup apps sent through POST /v1/downloads (k users each), drained, marts and report built;
    (API, the answers to markup in the closed-domain fields)."""
    api = LocalApi(module_env, os.environ["APPDATA_API_KEYS"])
    try:
        events = [make_event(n, with_id=True, app=app, user_id=500 + user, download_date="2024-03-01")
                  for n, (app, user) in enumerate((app, user) for app in MARKUP_APPS for user in range(DEFAULT_K))]
        status, body = post(api, events)
        assert (status, body["accepted"]) == (200, len(events)), body
        refused = {field: post(api, [make_event(99, **{field: MARKUP_APPS[0]})])
                   for field in ("category", "location", "content_rating")}
        drain_all(build_resources(module_env))
        engine = sa.create_engine(module_env.warehouse_url, poolclass=sa.pool.NullPool)
        try:
            marts.build_all_marts(engine)
            write_report(build_report(engine), module_env.home)
        finally:
            engine.dispose()
        yield api, refused
    finally:
        api.stop()


def chart_labels(page: Page) -> dict:
    return page.page.evaluate(OPEN_CHECK)


def assert_literal(found: dict, expected: set[str]) -> None:
    assert found["anchors"] == [], found["anchors"]
    assert found["shaped"] == [], found["shaped"]
    assert expected <= set(found["texts"]), sorted(expected - set(found["texts"]))


def test_markup_in_a_label_is_shown_as_text_on_every_page(chromium, posted) -> None:  # noqa: F811
    api, refused = posted
    for field, (status, body) in refused.items():
        assert status == 207 and [r["field"] for r in body["rejected"]] == [field], body

    page = Page(chromium, api.url)
    page.open("/dashboard")
    assert [row[0] for row in page.table("top_apps")] and set(row[0] for row in page.table("top_apps")) == set(MARKUP_APPS)
    assert_literal(chart_labels(page), set(MARKUP_APPS))

    for app in MARKUP_APPS:
        page.open("/dashboard/app?" + urlencode({"app": app}))
        assert page.page.inner_text("#app-name") == app
        assert page.page.title() == f"{app} · appdata"
        assert page.page.evaluate("document.body.dataset.state") == "ready"
        assert_literal(chart_labels(page), set(MARKUP_APPS) - {app})  # the others, as "also downloaded"

    assert page.errors == []
    page.page.goto(api.url + "/report")  # a static page: its only request beside itself is /favicon.ico
    assert page.page.locator("a, span[style], br").count() == 0
    images = page.page.eval_on_selector_all("img.chart", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(images) == 4 and all(images), images
    page.close()


def test_the_check_fails_when_the_helper_is_bypassed(chromium, posted) -> None:  # noqa: F811
    """Negative control: the same page with plotlyText made the identity draws links and styled text."""
    api, _ = posted
    page = Page(chromium, api.url)

    def bypass(route) -> None:
        script = route.fetch().text()
        assert "function plotlyText(value) {" in script
        route.fulfill(status=200, content_type="text/javascript",
                      body=script.replace("function plotlyText(value) {", "function plotlyText(value) { return String(value);"))

    page.page.route("**/dashboard/static/dashboard.js", bypass)
    page.open("/dashboard")
    found = chart_labels(page)
    assert found["anchors"] and found["shaped"]
    with pytest.raises(AssertionError):
        assert_literal(found, set(MARKUP_APPS))
    page.close()
