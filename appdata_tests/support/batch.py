"""The real batch assets on one Dagster instance, driven over day ranges as a backfill would."""

from __future__ import annotations


BATCH_ROWS_PER_DAY = 60


def range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


class BatchWorld:
    """The real batch assets on one Dagster instance: client data, landing, ETL, warehouse."""

    def __init__(self, settings, instance):
        import dagster as dg

        from appdata.defs.batch.assets import curated_batch, downloads_batch, landing_batch
        from appdata.defs.lake.assets import lake_downloads_batch
        from appdata.defs.resources import build_resources
        from appdata.defs.sources import playstore_apps, playstore_apps_raw, users_app_batch_client_data, users_batch

        self.dg = dg
        self.settings = settings
        self.instance = instance
        self.resources = build_resources(settings)
        self.sources = [playstore_apps_raw, playstore_apps, users_batch]
        self.client = users_app_batch_client_data
        self.landing, self.curated, self.warehouse = landing_batch, curated_batch, downloads_batch
        self.lake_table = lake_downloads_batch
        self.all = self.sources + [self.client, self.landing, self.curated, self.warehouse, self.lake_table]
        result = dg.materialize(self.sources, instance=instance, resources=self.resources)
        assert result.success

    def run(self, selection: list, first: str, last: str, *, ok: bool = True, config: dict | None = None):
        result = self.dg.materialize(self.all, selection=selection, instance=self.instance, resources=self.resources,
                                     tags=range_tags(first, last), raise_on_error=False, run_config=config)
        assert result.success == ok, [e.message for e in result.all_events if e.is_failure]
        return result

    def client_config(self, rows: int = BATCH_ROWS_PER_DAY) -> dict:
        return {"ops": {"users_app_batch_client_data": {"config": {"rows_per_day": rows}}}}

    def load(self, first: str, last: str, rows: int = BATCH_ROWS_PER_DAY):
        """Client data, landing, ETL, warehouse and lake table for the days first..last, as one run."""
        return self.run([self.client, self.landing, self.curated, self.warehouse, self.lake_table], first, last,
                        config=self.client_config(rows))
