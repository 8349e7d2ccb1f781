"""What the asset catalog says about each asset beyond its code: owners, tags, column schema,
code references. One table here, applied when the code location loads (`annotate`), so a new
asset that nobody classified fails the load instead of appearing unowned.
"""

import dagster as dg

from pyiceberg.types import TimestamptzType

from appdata.contract.schema import FIELDS, Field
from appdata.lake.tables import PROVENANCE

OWNERS = {
    "sources": ["team:data-platform"],
    "batch": ["team:data-platform"],
    "stream": ["team:data-platform"],
    "lake": ["team:data-platform"],
    "privacy": ["team:data-platform"],
    "analytics": ["team:analytics"],
}

# Layer of each asset (raw -> landing -> curated -> serving), and whether it holds personal
# data (user names): the tags the UI filters by and an access review starts from.
LAYER = {
    "playstore_apps_raw": "raw", "playstore_apps": "curated", "users_batch": "raw", "users_stream": "raw",
    "users_app_batch_client_data": "client", "users_app_stream_client_data": "client",
    "landing_batch": "landing", "curated_batch": "curated", "downloads_batch": "serving",
    "kinesis_downloads": "landing", "stream_lake": "curated", "dynamodb_downloads": "serving",
    "downloads_stream": "serving",
    "mart_downloads_daily": "mart", "mart_download_facts": "mart", "mart_audience": "mart", "mart_time_spent": "mart", "mart_charts": "mart",
    "user_recommendations": "serving", "analytics_report": "mart",
    "lake_downloads_stream": "curated", "lake_downloads_batch": "curated", "lake_downloads": "curated",
    "erasure_requests": "governance",
}
PERSONAL_DATA = {
    "users_batch", "users_stream", "users_app_batch_client_data", "users_app_stream_client_data",
    "landing_batch", "curated_batch", "downloads_batch", "kinesis_downloads", "stream_lake",
    "dynamodb_downloads", "downloads_stream", "mart_download_facts",  # the last keeps user ids
    "lake_downloads_stream", "lake_downloads_batch", "lake_downloads",
}
# The lake's Iceberg table: the event's columns, then where each row came from (appdata.lake.tables).
LAKE_TABLES = {"lake_downloads_stream", "lake_downloads_batch", "lake_downloads"}
# Assets whose rows are events of the contract (appdata.contract.schema.FIELDS), column for column.
EVENT_TABLES = {
    "users_app_batch_client_data", "users_app_stream_client_data", "landing_batch", "curated_batch",
    "downloads_batch", "kinesis_downloads", "stream_lake", "dynamodb_downloads", "downloads_stream",
}

_COLUMN_TYPES = {"str": "string", "enum": "string", "int": "bigint", "float": "double", "date": "date"}


def _column(field: Field) -> dg.TableColumn:
    rules = []
    if field.minimum is not None or field.maximum is not None:
        rules.append(f"{field.minimum if field.minimum is not None else '-inf'} <= value <= "
                     f"{field.maximum if field.maximum is not None else 'inf'}")
    if field.choices:
        rules.append("one of " + ", ".join(field.choices))
    if field.kind in ("str", "enum"):
        rules.append(f"at most {field.max_length} characters")
    return dg.TableColumn(field.name, _COLUMN_TYPES[field.kind], description=field.description,
                          constraints=dg.TableColumnConstraints(nullable=not field.required, other=rules))


EVENT_SCHEMA = dg.TableSchema(columns=[_column(f) for f in FIELDS])
LAKE_TABLE_SCHEMA = dg.TableSchema(columns=[_column(f) for f in FIELDS] + [
    dg.TableColumn(name, "timestamptz" if kind is TimestamptzType else "string", description=doc,
                   constraints=dg.TableColumnConstraints(nullable=not required))
    for name, kind, required, doc in PROVENANCE])


def annotate(defs: dg.Definitions) -> dg.Definitions:
    """`defs` with every asset's owners, tags, column schema and code reference filled in."""
    references = {
        key: metadata["dagster/code_references"]
        for assets_def in dg.with_source_code_references(list(defs.assets or []))
        if isinstance(assets_def, dg.AssetsDefinition)
        for key, metadata in assets_def.metadata_by_key.items() if "dagster/code_references" in metadata
    }

    def with_catalog(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        if name not in LAYER or spec.group_name not in OWNERS:
            raise dg.DagsterInvariantViolationError(
                f"asset {name} (group {spec.group_name}) has no layer or owner in appdata/defs/catalog.py")
        metadata = {}
        if name in EVENT_TABLES:
            metadata["dagster/column_schema"] = EVENT_SCHEMA
        if name in LAKE_TABLES:
            metadata["dagster/column_schema"] = LAKE_TABLE_SCHEMA
        if spec.key in references:
            metadata["dagster/code_references"] = references[spec.key]
        tags = {"layer": LAYER[name], **({"pii": ""} if name in PERSONAL_DATA else {})}
        return spec.merge_attributes(owners=OWNERS[spec.group_name], tags=tags, metadata=metadata)

    return defs.map_resolved_asset_specs(func=with_catalog)
