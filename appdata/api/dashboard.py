"""The analytics dashboard: two pages, their data endpoints, and the keyed /v1/analytics API.

Who may see what. A browser opening /dashboard cannot send the `x-api-key` header, so the pages
and the data they fetch (/dashboard/data/*) are public, and therefore publish only what may be
public: aggregates from the fact mart in which every group has at least k distinct users
(appdata.analytics.dashboard applies that; the pages cannot ask for anything else). The
same numbers are offered to programs at /v1/analytics/* under the API key, like every /v1 route,
documented in OpenAPI; the key there identifies the caller, it does not unlock finer cells.

What k-suppression guarantees, and what it does not. Within one response no group of fewer than
k distinct users is shown, none can be recovered from the totals (complementary suppression:
whatever a section leaves out holds 0 or at least k users), and no category median is moved or
pinned by an app under k. It does NOT protect against differencing across requests, the
"tracker" attack: ask the same question twice with one filter moved (start=2020-03-05, then
2020-03-06; or all states, then all states but one chosen through the options) and the
difference of two published counts, each of k users or more, can be one person. The filters are
free, so an attacker can build such pairs at will; suppression rules cannot close this. The real
fixes are noise (differential privacy: calibrated random noise on every published count, with a
privacy budget per caller) or query auditing (refusing a query whose answer, combined with those
already given, isolates fewer than k users). Neither is implemented: treat these numbers as
protected against casual reading, not against a determined adversary with many queries.

Reads open the warehouse per request (DuckDB read-only: the Dagster writer keeps its lock; a
busy file is a 503 to retry). SQLAlchemy and Plotly are imported on first use, so the API still
builds where the dashboard's libraries are absent (the Lambda package, which then answers 503).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from importlib import resources
from typing import Any, Literal, Optional

from fastapi import Depends, FastAPI, Path as PathParam, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from appdata.analytics.privacy import DEFAULT_K
from appdata.api.errors import ApiError, error_responses
from appdata.api.ingest import StoreUnavailable
from appdata.config import Settings

TEMPLATES = "templates"


class Section(BaseModel):
    title: str
    columns: list[str]
    rows: list[list[Any]]
    suppressed: int = Field(description="Groups withheld because they have fewer than k distinct users")
    source: str = Field(description="The mart the numbers come from")
    note: Optional[str] = Field(None, description="Why the section has no row (nothing matched, no group of k "
                                                  "users yet, or withheld for privacy); null when it has rows")
    grain: Optional[str] = None


class Freshness(BaseModel):
    built_at: str = Field(description="When the mart was last rebuilt (UTC)")
    data_through: Optional[str] = Field(description="Latest download date the mart includes")
    rows: int


class Totals(BaseModel):
    downloads: int
    users: int


class Overview(BaseModel):
    k: int = Field(description="Smallest group published, in distinct users")
    filters: dict[str, Any]
    totals: Optional[Totals] = Field(description="Null when the filtered group has fewer than k users")
    sections: dict[str, Section]
    freshness: Optional[Freshness]


class AppProfile(Overview):
    app: str
    category: str


class Options(BaseModel):
    k: int
    categories: list[str]
    apps: list[str]
    states: list[str]
    age_bands: list[str]
    grains: list[str]
    min_date: Optional[str]
    max_date: Optional[str]


DATE_SCHEMA = {"format": "date", "examples": ["2024-01-31"]}


def _date(name: str, value: Optional[str]) -> Optional[dt.date]:
    """A YYYY-MM-DD query value (parsed here: pydantic's date would take `1` as a Unix time)."""

    if value is None:
        return None
    from appdata.contract.days import parse_day

    try:
        return parse_day(value)
    except ValueError:
        raise ApiError(422, f"{name}: must be a date YYYY-MM-DD", name) from None


def _time_filters(start: Optional[str] = Query(None, description="First download date (inclusive), YYYY-MM-DD",
                                               json_schema_extra=DATE_SCHEMA),
                  end: Optional[str] = Query(None, description="Last download date (inclusive), YYYY-MM-DD",
                                             json_schema_extra=DATE_SCHEMA),
                  grain: Literal["day", "week", "month"] = Query("week", description="Time bucket of the series"),
                  ) -> dict[str, Any]:

    first, last = _date("start", start), _date("end", end)
    if first and last and first > last:
        raise ApiError(422, f"start {first} is after end {last}", "start")
    return {"start": first, "end": last, "grain": grain}


def _filters(time: dict[str, Any] = Depends(_time_filters),
             category: Optional[str] = Query(None, min_length=1, max_length=1024, description="Category"),
             app: Optional[str] = Query(None, min_length=1, max_length=1024, description="App"),
             state: Optional[str] = Query(None, min_length=1, max_length=1024, description="US state"),
             age_band: Optional[str] = Query(None, min_length=1, max_length=16, description="e.g. 25-34"),
             ) -> dict[str, Any]:
    """The filters as keyword arguments of appdata.analytics.dashboard.Filters."""

    names = {"category": category, "app": app, "state": state, "age_band": age_band}
    for name, value in names.items():
        if value is not None and "\x00" in value:  # PostgreSQL and Redshift refuse NUL in text
            raise ApiError(422, f"{name} must not contain NUL characters", name)
    return {**time, **names}


class Warehouse:
    """Read-only access to the warehouse for the dashboard, one connection per request."""

    def __init__(self, settings: Settings):
        self._url = settings.warehouse_url
        self._engine = None

    def engine(self) -> Any:
        """An engine on the marts' published copy once it exists (`appdata.analytics.published`),
        else on the warehouse itself, read-only."""
        try:
            import sqlalchemy as sa
        except ImportError as exc:  # the Lambda package carries no warehouse client
            raise StoreUnavailable("the dashboard needs SQLAlchemy, which this deployment lacks") from exc
        from appdata.analytics.published import published_path

        url = sa.engine.make_url(self._url)
        password = os.environ.get("APPDATA_WAREHOUSE_PASSWORD")
        if password:
            url = url.set(password=password)
        published = published_path(url)
        if published is not None and published.exists():
            url = url.set(database=str(published))
        if self._engine is None or self._engine.url != url:
            if url.get_backend_name() == "duckdb":
                on_disk = url.database not in (None, "", ":memory:")
                self._engine = sa.create_engine(url, poolclass=sa.pool.NullPool,
                                                connect_args={"read_only": True} if on_disk else {})
            else:
                self._engine = sa.create_engine(url, pool_pre_ping=True)
        return self._engine

    def read(self, query: Any, *args: Any) -> Any:
        """Run `query(engine, *args)`; an unreachable or locked warehouse is a 503."""
        engine = self.engine()
        try:
            return query(engine, *args)
        except Exception as exc:
            import sqlalchemy as sa

            if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) or "lock" in str(exc).lower():
                raise StoreUnavailable(f"the warehouse could not be read ({type(exc).__name__})") from exc
            raise


@functools.lru_cache(maxsize=1)
def plotly_js() -> bytes:
    """plotly.min.js from the installed plotly wheel: the page loads nothing from the internet."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as exc:
        raise StoreUnavailable("the dashboard needs the plotly package, which this deployment lacks") from exc
    return get_plotlyjs().encode("utf-8")


def _template(name: str) -> str:
    return resources.files("appdata.api").joinpath(TEMPLATES, name).read_text(encoding="utf-8")


def add_dashboard(app: FastAPI, settings: Settings, require_key: Any, k: int = DEFAULT_K) -> None:
    """Mount the pages, their public aggregate data, and the keyed /v1/analytics routes on `app`."""

    warehouse = Warehouse(settings)

    def options() -> dict[str, Any]:
        from appdata.analytics.dashboard import options as read_options

        return warehouse.read(read_options, k)

    def overview(filters: dict[str, Any]) -> dict[str, Any]:
        from appdata.analytics.dashboard import Filters, overview as read_overview

        return warehouse.read(read_overview, Filters(**filters), k)

    def profile(app_name: str, filters: dict[str, Any]) -> dict[str, Any]:
        from appdata.analytics.dashboard import Filters, app_profile, why_no_profile

        if "\x00" in app_name:
            raise ApiError(422, "app must not contain NUL characters", "app")
        found = warehouse.read(app_profile, app_name, Filters(**filters), k)
        if found is None:  # the detail says why: no mart yet, no downloads of it yet, or under k users
            raise ApiError(404, warehouse.read(why_no_profile, app_name, k), "app")
        return found

    # -- pages (public: aggregates only) ---------------------------------------------------------
    @app.get("/dashboard", response_class=HTMLResponse, tags=["dashboard"])
    def dashboard_page() -> HTMLResponse:
        """The interactive dashboard (filters re-query /dashboard/data/overview)."""
        return HTMLResponse(_template("dashboard.html"))

    @app.get("/dashboard/app", response_class=HTMLResponse, tags=["dashboard"])
    def app_page(app: str = Query(..., min_length=1, max_length=1024, description="The app")) -> HTMLResponse:
        """One app against its category's median app; the data comes from /dashboard/data/app."""
        return HTMLResponse(_template("app.html"))

    @app.get("/dashboard/static/plotly.min.js", tags=["dashboard"], response_class=Response)
    def plotly_script() -> Response:
        """Plotly's bundle, served from the installed package."""
        return Response(plotly_js(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/dashboard/static/dashboard.js", tags=["dashboard"], response_class=Response)
    def dashboard_script() -> Response:
        """The pages' shared script (filters, charts, tables, CSV)."""
        return Response(_template("dashboard.js"), media_type="text/javascript")

    @app.get("/dashboard/static/dashboard.css", tags=["dashboard"], response_class=Response)
    def dashboard_style() -> Response:
        """The pages' shared style sheet."""
        return Response(_template("dashboard.css"), media_type="text/css")

    @app.get("/dashboard/data/options", response_model=Options, tags=["dashboard"], responses=error_responses(503))
    def public_options() -> dict[str, Any]:
        """Filter choices: categories, apps, states and age bands having at least k users."""
        return options()

    @app.get("/dashboard/data/overview", response_model=Overview, tags=["dashboard"], responses=error_responses(422, 503))
    def public_overview(filters: dict[str, Any] = Depends(_filters)) -> dict[str, Any]:
        """The dashboard's numbers for the filters; groups under k users withheld."""
        return overview(filters)

    @app.get("/dashboard/data/app", response_model=AppProfile, tags=["dashboard"],
             responses=error_responses(404, 422, 503))
    def public_app(filters: dict[str, Any] = Depends(_time_filters),
                   app: str = Query(..., min_length=1, max_length=1024, description="The app")) -> dict[str, Any]:
        """One app vs. its category median; 404 when it has fewer than k users (the detail says why)."""
        return profile(app, filters)

    # -- the same numbers for programs, under the key ------------------------------------------------
    keyed = [Depends(require_key)]

    @app.get("/v1/analytics/options", response_model=Options, tags=["analytics"], dependencies=keyed,
             responses=error_responses(401, 403, 503))
    def v1_options() -> dict[str, Any]:
        """Filter values having at least k distinct users."""
        return options()

    @app.get("/v1/analytics/overview", response_model=Overview, tags=["analytics"], dependencies=keyed,
             responses=error_responses(401, 403, 422, 503))
    def v1_overview(filters: dict[str, Any] = Depends(_filters)) -> dict[str, Any]:
        """Downloads and users over time, by category, age band, state; top apps; time spent.
        Every group has at least k distinct users (the others are counted in `suppressed`)."""
        return overview(filters)

    # {app:path}: app names may hold "/" (sent raw or as %2F); OpenAPI still shows /v1/analytics/apps/{app}
    @app.get("/v1/analytics/apps/{app:path}", response_model=AppProfile, tags=["analytics"], dependencies=keyed,
             responses=error_responses(401, 403, 404, 422, 503))
    def v1_app(app: str = PathParam(min_length=1, max_length=1024,
                                    description='The app, URL-encoded (a "/" in its name may stay as is)'),
               filters: dict[str, Any] = Depends(_time_filters)) -> dict[str, Any]:
        """One app vs. its category's median app, and what its users also downloaded."""
        return profile(app, filters)
