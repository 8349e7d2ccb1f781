"""The lake's Iceberg tables (pyiceberg): what data scientists and every engine query."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyiceberg.table import Table


def open_downloads() -> "Table":
    """The downloads table of this environment (APPDATA_* settings, as `appdata up` and the
    pipeline use): `open_downloads().scan(row_filter="download_date >= '2020-01-01'").to_pandas()`."""
    from appdata.config import Settings, aws_client_kwargs
    from appdata.lake.tables import catalog_config, open_table

    settings = Settings.from_env()
    s3 = {key: value for key, value in aws_client_kwargs(settings, "s3").items() if key != "use_ssl"}
    return open_table(catalog_config(settings.lake_catalog, settings.bucket,
                                     glue_endpoint_url=settings.aws_endpoints.url("glue"), **s3))
