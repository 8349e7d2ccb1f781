"""What the code location tells a UI user about the API names routes the API really serves."""

from __future__ import annotations

import re

import dagster as dg

# A route in prose: "/" after a space, "(" or the start, then path segments ("GET /report",
# "at /dashboard.", "GET /v1/users/{id}/downloads"); not an S3 key or a file path
# ("s3://<bucket>/reports/", "download_date=/hour=", "$APPDATA_HOME/reports/...").
ROUTE = re.compile(r"(?:^|(?<=[\s(]))(/[A-Za-z][\w{}:/.-]*)")


def _normal(path: str) -> str:
    """A route with its parameters unnamed and no trailing punctuation: /v1/users/{}/downloads."""
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip(".,;:)"))


def _texts(defs: dg.Definitions) -> dict[str, str]:
    """Every description and text metadata value a UI user reads, by where it is."""
    graph = defs.resolve_asset_graph()
    texts: dict[str, str] = {}
    for node in graph.asset_nodes:
        name = node.key.to_user_string()
        texts[name] = node.description or ""
        for key, value in (node.metadata or {}).items():
            if key != "dagster/code_references":  # file paths on this machine
                texts[f"{name} metadata {key}"] = str(getattr(value, "value", value))
    for assets_def in graph.assets_defs:
        for spec in assets_def.check_specs:
            texts[f"check {spec.key.to_user_string()}"] = spec.description or ""
    for job in defs.resolve_all_job_defs():
        texts[f"job {job.name}"] = job.description or ""
    for definition in [*(defs.schedules or []), *(defs.sensors or [])]:
        texts[f"{type(definition).__name__} {definition.name}"] = getattr(definition, "description", None) or ""
    return texts


def test_every_route_a_description_names_is_served_by_the_api(offline_env):
    from appdata.api.app import create_app
    from appdata.definitions import build_definitions

    served = {_normal(route.path) for route in create_app(offline_env, api_keys=["k"]).routes}
    named = {(where, path) for where, text in _texts(build_definitions()).items() for path in ROUTE.findall(text)}
    assert named, "no route found in any description: the pattern no longer reads them"
    stale = sorted((where, path) for where, path in named if _normal(path) not in served)
    assert stale == [], f"descriptions name routes the API does not serve: {stale}"


def test_the_report_asset_names_the_report_route(offline_env):
    from appdata.definitions import build_definitions

    description = build_definitions().resolve_assets_def("analytics_report").specs_by_key[
        dg.AssetKey("analytics_report")].description
    assert "/report" in ROUTE.findall(description)


def test_the_route_pattern_skips_keys_and_paths():
    text = ("at $APPDATA_HOME/reports/appdata_report.html and s3://<bucket>/reports/; lake/stream/download_date=/hour=/x; "
            "served at GET /report (the dashboard is /dashboard). GET /v1/users/{id}/downloads, then /v1/analytics/apps/{app:path}.")
    assert ROUTE.findall(text) == ["/report", "/dashboard", "/v1/users/{id}/downloads", "/v1/analytics/apps/{app:path}."]
    assert _normal("/v1/analytics/apps/{app:path}.") == "/v1/analytics/apps/{}"
