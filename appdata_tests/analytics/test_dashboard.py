"""The dashboard's numbers: right, k-suppressed everywhere, the same on DuckDB and PostgreSQL,
parseable for Redshift, and served (public aggregates, keyed /v1/analytics) by the API."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from appdata.analytics import dashboard, marts
from appdata.analytics.marts import ALL_DOWNLOADS, age_band_case
from appdata.api.app import create_app
from appdata.config import Settings
from appdata.contract.schema import EVENT_COLUMNS, coerce_event_frame
from appdata.warehouse.loader import create_schema, replace_all
from appdata_tests.support.analytics import D, event, hand_made, load_warehouse

K = dashboard.DEFAULT_K
FORMULA_APP = '=HYPERLINK("http://example.invalid","open")'  # what a spreadsheet would run, if unescaped
SLASH_APP = "Notes / Docs"  # a name a path segment cannot hold


def named_app(rows: pd.DataFrame, name: str, first_user: int, users: int = 6) -> pd.DataFrame:
    """`users` downloads of app `name` (category UNKNOWN) by as many new users."""
    app = rows.head(users).copy()
    app["event_id"] = f"{first_user}-" + app["event_id"].astype(str)
    app["app"], app["category"] = name, dashboard.UNKNOWN_CATEGORY
    app["user_id"] = range(first_user, first_user + users)
    return app


def dashboard_events() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generated downloads in two bursts two months apart (a gap), plus a small UNKNOWN category
    (one app of 8 users, and two of 6 with hostile names)."""
    from appdata.sources.catalogue import clean_catalogue, load_catalogue
    from appdata_tests.support.analytics import generated

    apps, _ = clean_catalogue(load_catalogue(None, seed=7)[0])
    stream = generated(apps, "taste", users=300, days=6, rows=700)
    batch = stream.copy()
    batch["event_id"] = "b" + batch["event_id"].astype(str)
    batch["download_date"] = batch["download_date"] - dt.timedelta(days=60)
    unknown = stream.head(8).copy()  # 8 downloads of one UNKNOWN app by 8 different users
    unknown["event_id"] = "u" + unknown["event_id"].astype(str)
    unknown["app"], unknown["category"] = "Shifted Row App", dashboard.UNKNOWN_CATEGORY
    unknown["user_id"] = range(900_001, 900_009)
    hostile = [named_app(stream, FORMULA_APP, 900_101), named_app(stream, SLASH_APP, 900_201)]
    return pd.concat([batch, unknown, *hostile], ignore_index=True), stream


def load_dashboard_data(url: str) -> sa.Engine:
    return load_warehouse(url, *dashboard_events(), build_marts=True)


def raw_groups(engine: sa.Engine, key: str, where: str = "1 = 1", params: dict | None = None) -> pd.DataFrame:
    """Downloads and distinct users per group straight from the download tables (not the mart)."""
    sql = f"""SELECT g, COUNT(*) AS downloads, COUNT(DISTINCT user_id) AS users FROM (
        SELECT {key} AS g, user_id, download_date, category, app, location, age FROM downloads_batch
        UNION ALL SELECT {key} AS g, user_id, download_date, category, app, location, age FROM downloads_stream) d
        WHERE {where} GROUP BY g"""
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql), params or {})
        return pd.DataFrame(result.fetchall(), columns=["g", "downloads", "users"])


@pytest.fixture(scope="module")
def events() -> tuple[pd.DataFrame, pd.DataFrame]:
    return dashboard_events()


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest) -> sa.Engine:
    url = request.getfixturevalue("duckdb_url" if request.param == "duckdb" else "postgres_url")
    engine = load_dashboard_data(url)
    yield engine
    engine.dispose()


def shown_groups(section: dict) -> dict:
    columns = section["columns"]
    return {row[0]: dict(zip(columns, row)) for row in section["rows"]}


def test_every_group_shown_has_k_users_and_matches_the_download_tables(warehouse: sa.Engine) -> None:
    state = next(iter(dashboard.options(warehouse)["states"]))
    withheld = 0
    for filters, where, params in (
        (dashboard.Filters(), "1 = 1", {}),
        (dashboard.Filters(state=state), "location = :s", {"s": state}),
        (dashboard.Filters(category="GAME", grain="day"), "category = :c", {"c": "GAME"}),
    ):
        view = dashboard.overview(warehouse, filters)
        for key, column in (("by_state", "location"), ("by_category", "category"), ("top_apps", "app")):
            raw = raw_groups(warehouse, column, where, params)
            big = raw[raw["users"] >= K]
            shown = shown_groups(view["sections"][key])
            expected = big.sort_values(["downloads", "g"], ascending=[False, True]).head(10) if key == "top_apps" else big
            small = int((raw["users"] < K).sum())
            if key != "top_apps" and 0 < users_left_out(warehouse, column, list(big["g"]), where, params) < K:
                # Complementary suppression: the groups under k hold 1..k-1 users, so the smallest shown goes too.
                expected = expected.drop(index=expected.sort_values(["users", "g"], kind="stable").index[0])
                small += 1
            assert set(shown) == set(expected["g"]), (key, filters)
            for _, row in expected.iterrows():
                assert (shown[row["g"]]["downloads"], shown[row["g"]]["users"]) == (row["downloads"], row["users"])
            if key != "top_apps":
                assert view["sections"][key]["suppressed"] == small
                withheld += view["sections"][key]["suppressed"]
        for section in view["sections"].values():  # wherever users are shown, they are k or more
            if "users" in section["columns"]:
                assert all(row[section["columns"].index("users")] >= K for row in section["rows"])
    assert withheld > 0  # the data has small groups, so the rule was exercised


def test_small_groups_never_appear_even_the_total(warehouse: sa.Engine) -> None:
    tiny = dashboard.overview(warehouse, dashboard.Filters(app="Shifted Row App", state="Nowhere"))
    assert tiny["totals"] is None and all(not s["rows"] for s in tiny["sections"].values())
    options = dashboard.options(warehouse)
    apps = raw_groups(warehouse, "app")
    assert set(options["apps"]) == set(apps[apps["users"] >= K]["g"])
    small_app = apps[apps["users"] < K]["g"].iloc[0]
    assert dashboard.app_profile(warehouse, small_app, dashboard.Filters()) is None


def test_unknown_category_never_leads_and_time_axis_keeps_gaps(warehouse: sa.Engine) -> None:
    view = dashboard.overview(warehouse, dashboard.Filters(grain="day"))
    categories = [row[0] for row in view["sections"]["by_category"]["rows"]]
    assert categories[-1] == dashboard.UNKNOWN_CATEGORY and categories[0] != dashboard.UNKNOWN_CATEGORY
    assert dashboard.category_order(["UNKNOWN", "GAME"], {"UNKNOWN": 100, "GAME": 1}) == ["GAME", "UNKNOWN"]
    days = [dt.date.fromisoformat(row[0]) for row in view["sections"]["over_time"]["rows"]]
    assert max(b - a for a, b in zip(days, days[1:])) > dt.timedelta(days=50)  # no invented days in between
    assert view["freshness"]["data_through"] == max(days).isoformat()


def most_apps_of_k_users(engine: sa.Engine) -> str:
    """The category with the most apps of k users or more (ties: by name)."""
    apps = raw_groups(engine, "app")
    apps = apps[apps["users"] >= K]
    with engine.connect() as conn:
        category = dict(conn.execute(sa.text(f"SELECT d.app, MIN(d.category) FROM {ALL_DOWNLOADS} d GROUP BY d.app")).all())
    counts = apps["g"].map(category).value_counts()
    return sorted(counts.index, key=lambda c: (-counts[c], c))[0]


def test_app_profile_against_its_category(warehouse: sa.Engine) -> None:
    category = most_apps_of_k_users(warehouse)  # so its medians have apps enough
    apps = raw_groups(warehouse, "app", "category = :c", {"c": category})
    app = apps.sort_values(["users", "g"], ascending=[False, True])["g"].iloc[0]
    profile = dashboard.app_profile(warehouse, app, dashboard.Filters(grain="month"))
    raw = raw_groups(warehouse, "app", "app = :a", {"a": app}).iloc[0]
    assert profile["totals"] == {"downloads": raw["downloads"], "users": raw["users"]}
    sections = profile["sections"]
    assert sum(row[1] for row in sections["over_time"]["rows"]) + 0 <= raw["downloads"]
    assert all(row[2] >= K for row in sections["over_time"]["rows"])
    assert all(row[1] >= K for row in sections["by_age_band"]["rows"] + sections["by_state"]["rows"])
    assert sections["time_spent"]["rows"][0][0] == app and sections["time_spent"]["rows"][0][3] is not None
    assert all(row[2] >= K for row in sections["also_downloaded"]["rows"])
    assert sections["also_downloaded"]["suppressed"] > 0
    also = dashboard.app_profile(warehouse, app, dashboard.Filters(), k=2)["sections"]["also_downloaded"]
    assert also["rows"] and all(row[2] >= 2 and row[0] != app for row in also["rows"])
    assert [row[3] for row in also["rows"]] == sorted((row[3] for row in also["rows"]), reverse=True)
    # users in common, checked against the download tables
    other = also["rows"][0][0]
    with warehouse.connect() as conn:
        both = conn.execute(sa.text(f"""SELECT COUNT(DISTINCT a.user_id) FROM {marts.ALL_DOWNLOADS} a
            JOIN {marts.ALL_DOWNLOADS} b ON a.user_id = b.user_id WHERE a.app = :x AND b.app = :y"""),
            {"x": app, "y": other}).scalar_one()
    assert also["rows"][0][2] == both


def test_hand_made_data_is_all_withheld_under_k(duckdb_url: str) -> None:
    """Six users in all: the total shows; no state, band or app reaches five users, and no category
    may be shown without exposing the others."""
    engine = load_warehouse(duckdb_url, *hand_made(), build_marts=True)
    view = dashboard.overview(engine, dashboard.Filters())
    assert view["totals"] == {"downloads": 10, "users": 6}
    assert view["sections"]["by_state"] == {**view["sections"]["by_state"], "rows": [], "suppressed": 2}
    # GAME has all 6 users, but showing its 8 downloads beside the total of 10 would reveal the 2
    # downloads of SOCIAL and FINANCE (2 users): complementary suppression withholds GAME too.
    assert view["sections"]["by_category"] == {**view["sections"]["by_category"], "rows": [], "suppressed": 3}
    assert dashboard.overview(engine, dashboard.Filters(), k=1)["sections"]["by_state"]["suppressed"] == 0


def test_empty_sections_and_missing_app_pages_say_why(duckdb_url: str) -> None:
    """Hand-made data (6 users): every empty panel carries the reason, and so does an app with no page."""
    engine = load_warehouse(duckdb_url, *hand_made(), build_marts=True)
    sections = dashboard.overview(engine, dashboard.Filters())["sections"]
    # Seven apps, none of 5 users: the panel says so, with the count withheld.
    assert sections["top_apps"]["note"] == "no app has reached 5 users yet: 7 groups withheld for privacy"
    assert sections["by_state"]["note"] == "no state has reached 5 users yet: 2 groups withheld for privacy"
    # GAME has its 6 users, but beside the total it would give away SOCIAL and FINANCE.
    assert sections["by_category"]["note"] == ("withheld for privacy: showing the 1 category of 5 users or more "
                                               "beside the totals would reveal the 2 smaller groups")
    assert all(section["note"] for section in sections.values() if not section["rows"])
    shown = dashboard.overview(engine, dashboard.Filters(), k=1)["sections"]
    assert all(section["rows"] and section["note"] is None for section in shown.values())
    nothing = dashboard.overview(engine, dashboard.Filters(start=D(2030, 1, 1)))["sections"]
    assert nothing["top_apps"]["note"] == "no downloads match these filters"

    assert dashboard.why_no_profile(engine, "No Such App") == "no downloads of 'No Such App' yet"
    assert dashboard.app_profile(engine, "Chess", dashboard.Filters()) is None
    assert dashboard.why_no_profile(engine, "Chess") == (
        "'Chess' has not reached 5 users yet: apps with fewer are not published, for privacy")
    # An app with a page, on dates where it has fewer than k users: each of its panels says why.
    profile = dashboard.app_profile(engine, "Chess", dashboard.Filters(start=D(2024, 3, 31)), k=2)
    assert profile["totals"] is None
    assert profile["sections"]["by_state"]["note"] == "no state of this app has reached 2 users yet: 1 state withheld for privacy"
    assert profile["sections"]["time_spent"]["note"] == "this app has not reached 2 users within these dates"
    assert profile["sections"]["also_downloaded"]["note"].startswith("no other app")
    empty = sa.create_engine(duckdb_url.replace("warehouse.duckdb", "empty.duckdb"), poolclass=sa.pool.NullPool)
    assert dashboard.why_no_profile(empty, "Chess").startswith("no mart built yet")
    engine.dispose()
    empty.dispose()


def test_dashboard_sql_parses_for_redshift(duckdb_url: str) -> None:
    import sqlglot

    engine = load_dashboard_data(duckdb_url)
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    dashboard.overview(engine, dashboard.Filters(start=dt.date(2023, 1, 1), category="GAME", state="Ohio",
                                                 age_band="25-34", grain="week"))
    app = dashboard.options(engine)["apps"][0]
    dashboard.app_profile(engine, app, dashboard.Filters(grain="month"))
    ours = [s for s in statements if dashboard.FACTS in s]
    assert len(ours) > 10
    for sql in ours:
        literal = re.sub(r"\$\d+|\?", "'2024-01-01'", sql)  # DuckDB's placeholders -> values
        assert sqlglot.parse_one(literal, read="redshift") is not None


def privacy_events() -> pd.DataFrame:
    """30 users, each with one age and one state: band 65+ has 3 users and state Maine 2, every
    other band and state 5 or more. GAME apps A (10 users), B (8), C (6) and D (1 user, far longer
    sessions); TOOLS apps T1 (6) and T2 (7)."""
    age = {**{u: 20 for u in range(1, 11)}, **{u: 30 for u in range(11, 21)}, **{u: 40 for u in range(21, 28)},
           **{u: 70 for u in range(28, 31)}}
    state = {**{u: "Ohio" for u in range(1, 13)}, **{u: "Texas" for u in range(13, 24)},
             **{u: "Utah" for u in range(24, 29)}, 29: "Maine", 30: "Maine"}
    apps = [("A", "GAME", range(1, 11), 10), ("B", "GAME", range(11, 19), 20), ("C", "GAME", range(19, 25), 30),
            ("D", "GAME", [25], 999), ("T1", "TOOLS", range(25, 31), 15), ("T2", "TOOLS", range(1, 8), 25)]
    pairs = [(app, category, u, minutes) for app, category, users, minutes in apps for u in users]
    rows = [event(n, u, age[u], state[u], app, category, D(2024, 3, 1 + u % 3), minutes)
            for n, (app, category, u, minutes) in enumerate(pairs, start=1)]
    return coerce_event_frame(pd.DataFrame(rows, columns=list(EVENT_COLUMNS)))


@pytest.fixture(params=["duckdb", "postgres"])
def private_warehouse(request: pytest.FixtureRequest) -> sa.Engine:
    engine = sa.create_engine(request.getfixturevalue("duckdb_url" if request.param == "duckdb" else "postgres_url"),
                              poolclass=sa.pool.NullPool)
    create_schema(engine)
    events = privacy_events()
    replace_all(engine, "downloads_batch", events.iloc[:20])
    replace_all(engine, "downloads_stream", events.iloc[20:])
    marts.build_all_marts(engine)
    yield engine
    engine.dispose()


SECTION_COLUMNS = {"by_age_band": "age_band", "by_state": "location", "by_category": "category", "top_apps": "app",
                   "over_time": "download_date"}


def users_left_out(engine: sa.Engine, column: str, shown: list, where: str, params: dict) -> int:
    """Distinct users of the download rows outside the shown groups: what totals minus rows expose."""
    names = {f"s{i}": value for i, value in enumerate(shown)}
    outside = f" AND d.{column} NOT IN ({', '.join(':' + n for n in names)})" if names else ""
    sql = (f"SELECT COUNT(DISTINCT d.user_id) FROM (SELECT x.*, {age_band_case('x.age')} AS age_band "
           f"FROM {ALL_DOWNLOADS} x) d WHERE {where}{outside}")
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), {**params, **names}).scalar_one()


def assert_nothing_recoverable(engine: sa.Engine, view: dict, where: str = "1 = 1", params: dict | None = None):
    for key, column in SECTION_COLUMNS.items():
        section = view["sections"][key]
        shown = [dt.date.fromisoformat(r[0]) if column == "download_date" else r[0] for r in section["rows"]]
        left_out = users_left_out(engine, column, shown, where, params or {})
        assert left_out == 0 or left_out >= K, (key, left_out)
        assert (section["suppressed"] == 0) == (left_out == 0), key
        if key in ("by_age_band", "by_state"):  # each user in one group: the brief's own check
            remainder = view["totals"]["users"] - sum(row[section["columns"].index("users")] for row in section["rows"])
            assert remainder == 0 or remainder >= K, (key, remainder)


def test_no_small_group_is_recoverable_from_totals_minus_the_rows_shown(private_warehouse: sa.Engine) -> None:
    view = dashboard.overview(private_warehouse, dashboard.Filters(grain="day"))
    assert view["totals"]["users"] == 30
    bands = shown_groups(view["sections"]["by_age_band"])
    # 65+ (3 users) is withheld, and so is the next smallest band, 35-44 (7): 10 users left out.
    assert set(bands) == {"18-24", "25-34"} and view["sections"]["by_age_band"]["suppressed"] == 2
    assert set(shown_groups(view["sections"]["by_state"])) == {"Ohio", "Texas"}  # Maine (2) and Utah (5) withheld
    assert_nothing_recoverable(private_warehouse, view)
    game = dashboard.overview(private_warehouse, dashboard.Filters(category="GAME", grain="day"))
    assert_nothing_recoverable(private_warehouse, game, "category = :c", {"c": "GAME"})
    # Without the secondary rule the rows would have exposed them: k=1 shows everything.
    assert dashboard.overview(private_warehouse, dashboard.Filters(), k=1)["sections"]["by_age_band"]["suppressed"] == 0
    profile = dashboard.app_profile(private_warehouse, "T1", dashboard.Filters(grain="day"))
    for key in ("by_age_band", "by_state", "over_time"):
        rows, columns = profile["sections"][key]["rows"], profile["sections"][key]["columns"]
        remainder = profile["totals"]["users"] - sum(row[columns.index("users")] for row in rows)
        if key != "over_time":
            assert remainder == 0 or remainder >= K, (key, remainder)
        left_out = profile["totals"]["downloads"] - sum(row[columns.index("downloads")] for row in rows) \
            if "downloads" in columns else 0
        assert left_out == 0 or profile["sections"][key]["suppressed"] > 0


def test_category_medians_ignore_apps_under_k_and_need_three_apps(private_warehouse: sa.Engine) -> None:
    """D (1 user, 999 minutes) must not move GAME's median; TOOLS has only two apps of k users; no
    cell of an app under k users in that group enters a median."""
    profile = dashboard.app_profile(private_warehouse, "A", dashboard.Filters(grain="month"))
    time_spent = shown_groups(profile["sections"]["time_spent"])["A"]
    assert time_spent["category_median_avg_minutes"] == 20.0  # median of A 10, B 20, C 30; with D it would be 25
    over_time = profile["sections"]["over_time"]["rows"]
    assert [row[3] for row in over_time] == [8.0]  # median of 10, 8, 6 downloads, D's 1 not counted
    bands = shown_groups(profile["sections"]["by_age_band"])
    assert bands["18-24"]["category_median_share_pct"] is None  # only A has k users aged 18-24
    # B's 25-34 median over A (0 users there), B (8) and C (2) was C's exact share, 33.3 %: a reader
    # posting two apps of their own could bracket any third app's small cell that way.
    b_bands = shown_groups(dashboard.app_profile(private_warehouse, "B", dashboard.Filters())["sections"]["by_age_band"])
    assert b_bands["25-34"]["users"] == 8 and b_bands["25-34"]["category_median_share_pct"] is None
    tools = dashboard.app_profile(private_warehouse, "T2", dashboard.Filters(grain="month"))
    for key in ("over_time", "by_age_band", "by_state", "time_spent"):
        section = tools["sections"][key]
        median = next(c for c in section["columns"] if c.startswith("category_median"))
        assert section["rows"] and all(row[section["columns"].index(median)] is None for row in section["rows"]), key


# -- the API ------------------------------------------------------------------------------------
@pytest.fixture()
def api(duckdb_url: str, tmp_path) -> TestClient:
    load_dashboard_data(duckdb_url).dispose()
    settings = dataclasses.replace(Settings.from_env(), home=tmp_path, warehouse_url=duckdb_url)
    with TestClient(create_app(settings, api_keys=["dash-key"])) as client:
        yield client


def test_public_data_and_keyed_v1_serve_the_same_suppressed_numbers(api: TestClient) -> None:
    public = api.get("/dashboard/data/overview", params={"grain": "month"})
    assert public.status_code == 200
    assert api.get("/v1/analytics/overview", params={"grain": "month"}).status_code == 401
    keyed = api.get("/v1/analytics/overview", params={"grain": "month"}, headers={"x-api-key": "dash-key"})
    assert keyed.json() == public.json()
    options = api.get("/v1/analytics/options", headers={"x-api-key": "dash-key"}).json()
    app = options["apps"][0]
    profile = api.get(f"/v1/analytics/apps/{app}", headers={"x-api-key": "dash-key"})
    assert profile.status_code == 200 and profile.json()["app"] == app
    assert api.get("/dashboard/data/app", params={"app": app}).json() == profile.json()
    missing = api.get("/dashboard/data/app", params={"app": "No Such App"})
    assert missing.status_code == 404 and missing.json()["field"] == "app"
    assert missing.json()["detail"] == "no downloads of 'No Such App' yet"
    assert all("note" in section for section in public.json()["sections"].values())
    backwards = api.get("/dashboard/data/overview", params={"start": "2024-02-01", "end": "2024-01-01"})
    assert backwards.status_code == 422 and backwards.json()["field"] == "start"
    not_a_date = api.get("/dashboard/data/overview", params={"start": "1"})  # pydantic would read a Unix time
    assert not_a_date.status_code == 422 and not_a_date.json()["detail"] == "start: must be a date YYYY-MM-DD"


def test_an_app_name_with_a_slash_is_reachable_under_v1(api: TestClient) -> None:
    key = {"x-api-key": "dash-key"}
    assert SLASH_APP in api.get("/v1/analytics/options", headers=key).json()["apps"]
    for path in (f"/v1/analytics/apps/{SLASH_APP}", "/v1/analytics/apps/Notes%20%2F%20Docs"):
        profile = api.get(path, headers=key)
        assert profile.status_code == 200 and profile.json()["app"] == SLASH_APP, path
    assert api.get("/v1/analytics/apps/Notes%20%2F%20Doc", headers=key).status_code == 404


def test_a_writer_holding_the_warehouse_never_locks_the_dashboard_out(api: TestClient, duckdb_url: str) -> None:
    """A writer (another process, like a drain range or a mart rebuild) holds DuckDB's lock: the
    dashboard reads the marts' published copy and answers as before; with no copy published yet
    the read is refused as retryable (503), never accepted-sounding."""
    import subprocess
    import sys

    from appdata.analytics.published import published_path

    before = api.get("/dashboard/data/overview").json()
    path = sa.engine.make_url(duckdb_url).database
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
                               "print('locked', flush=True); sys.stdin.read()", path],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        while_locked = api.get("/dashboard/data/overview")
        published_path(duckdb_url).unlink()
        unpublished = api.get("/dashboard/data/overview")
    finally:
        holder.communicate("")
    assert while_locked.status_code == 200 and while_locked.json() == before
    assert unpublished.status_code == 503
    assert "retry shortly" in unpublished.json()["detail"] and "accepted" not in unpublished.json()["detail"]


def test_pages_and_plotly_are_served_from_the_package(api: TestClient) -> None:
    page = api.get("/dashboard")
    assert page.status_code == 200 and '<script src="/dashboard/static/plotly.min.js">' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the internet
    assert api.get("/dashboard/app", params={"app": "x"}).status_code == 200
    script = api.get("/dashboard/static/plotly.min.js")
    assert script.status_code == 200 and len(script.content) > 1_000_000 and b"plotly" in script.content[:2000]
    assert api.get("/dashboard/static/dashboard.js").headers["content-type"].startswith("text/javascript")
    assert api.get("/dashboard/static/dashboard.css").headers["content-type"].startswith("text/css")
    spec = api.get("/openapi.json").json()
    for path in ("/v1/analytics/overview", "/v1/analytics/apps/{app}", "/v1/analytics/options"):
        assert spec["paths"][path]["get"]["security"], path
    assert "security" not in spec["paths"]["/dashboard/data/overview"]["get"]
