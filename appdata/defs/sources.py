"""Source assets (group `sources`): the catalogue, the fake users and the clients' datasets."""


import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd

from appdata.defs.partitions import daily_partitions, partition_days
from appdata.defs.resources import SimulatedClientsResource
from appdata.sources.catalogue import clean_catalogue, load_catalogue
from appdata.sources.client_files import batch_day_path, stream_csv_path
from appdata.sources.users import BATCH_FIRST_ID, BATCH_USERS, STREAM_FIRST_ID, STREAM_USERS, downloads_for_day, make_users

GROUP = "sources"


def _preview(frame: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False))


@dg.asset(
    group_name=GROUP,
    kinds={"csv", "pandas"},
    description="The Google Play Store catalogue as published (APPDATA_PLAYSTORE_CSV), or a "
    "deterministic synthetic one of the same shape and dirt when no file is configured.",
)
def playstore_apps_raw(context: dg.AssetExecutionContext, clients: SimulatedClientsResource
                       ) -> dg.Output[pd.DataFrame]:
    raw, source = load_catalogue(clients.catalogue_csv, seed=clients.seed)
    context.log.info(f"read {len(raw):,} catalogue rows from {source}")
    return dg.Output(
        raw,
        metadata={"dagster/row_count": len(raw), "source": source, "preview": _preview(raw.drop(columns=["_line", "_fields"]))},
    )


@dg.asset(
    group_name=GROUP,
    kinds={"pandas"},
    description="The catalogue cleaned and typed, one row per app; every cleaning rule is counted "
    "in the metadata.",
)
def playstore_apps(context: dg.AssetExecutionContext, playstore_apps_raw: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    apps, report = clean_catalogue(playstore_apps_raw)
    summary = report.as_dict(with_rows=False)
    rules = summary.pop("rules")
    metadata = {"dagster/row_count": len(apps), **{k: v for k, v in summary.items() if v is not None}}
    metadata["rules"] = dg.MetadataValue.md("\n".join(f"1. {rule}" for rule in rules))
    if report.quarantined or report.repaired:
        metadata["repaired_and_quarantined"] = dg.MetadataValue.json(
            {"repaired": report.repaired, "quarantined": report.quarantined}
        )
    metadata["preview"] = _preview(apps)
    context.log.info(f"{report.rows_read:,} rows read -> {report.apps_out:,} apps")
    return dg.Output(apps, metadata=metadata)


def _users_asset(name: str, count: int, first_id: int, client: str, description: str):
    @dg.asset(name=name, group_name=GROUP, kinds={"pandas"}, description=description)
    def _users(playstore_apps: pd.DataFrame, clients: SimulatedClientsResource) -> dg.Output[pd.DataFrame]:
        categories = sorted(playstore_apps["category"].unique())
        users = make_users(count, first_id, clients.seed + first_id, categories, client)
        return dg.Output(
            users,
            metadata={
                "dagster/row_count": len(users),
                "age_min": int(users["age"].min()),
                "age_max": int(users["age"].max()),
                "locations": int(users["location"].nunique()),
            },
        )

    return _users


users_batch = _users_asset(
    "users_batch", BATCH_USERS, BATCH_FIRST_ID, "batch",
    "200 seeded Faker users of the batch client: id, name, location, age, minutes habit, tastes.",
)
users_stream = _users_asset(
    "users_stream", STREAM_USERS, STREAM_FIRST_ID, "stream",
    "1,000 seeded Faker users of the stream client: id, name, location, age, tastes.",
)


class ClientDataConfig(dg.Config):
    rows_per_day: int = 0  # 0: about len(apps)/366 a day, as in the seed; >0: the scale knob


@dg.asset(
    group_name=GROUP,
    kinds={"parquet", "pandas"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="The batch client's own data: each day's downloads (catalogue rows joined with "
    "batch users), kept at the client as Parquet until its 23:00 drop.",
)
def users_app_batch_client_data(
    context: dg.AssetExecutionContext,
    config: ClientDataConfig,
    playstore_apps: pd.DataFrame,
    users_batch: pd.DataFrame,
    clients: SimulatedClientsResource,
) -> dg.MaterializeResult:
    rows = config.rows_per_day or clients.rows_per_day
    days = partition_days(context)
    total = 0
    for number, day in enumerate(days, start=1):
        frame = downloads_for_day(playstore_apps, users_batch, day, source="batch", seed=clients.seed,
                                  rows=rows, mode=clients.preferences)
        path = batch_day_path(clients.client_path, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)  # atomic: a crashed run never leaves half a file
        total += len(frame)
        if number % 30 == 0 or number == len(days):
            context.log.info(f"client data: {number}/{len(days)} days, {total:,} rows")
    return dg.MaterializeResult(
        metadata={"dagster/row_count": total, "days": len(days), "first_day": str(days[0]), "last_day": str(days[-1]),
                  "client_dir": str(clients.client_path / "batch")}
    )


@dg.asset(
    group_name=GROUP,
    kinds={"csv", "pandas"},
    description="The stream client's data: catalogue rows joined with stream users, download "
    "date today; `appdata send` and the every-minute schedule post it to the API.",
)
def users_app_stream_client_data(
    context: dg.AssetExecutionContext, playstore_apps: pd.DataFrame, users_stream: pd.DataFrame,
    clients: SimulatedClientsResource,
) -> dg.MaterializeResult:
    today = dt.datetime.now(ZoneInfo(clients.timezone)).date()
    frame = downloads_for_day(playstore_apps, users_stream, today, source="stream", seed=clients.seed,
                              rows=len(playstore_apps), mode=clients.preferences)
    path = stream_csv_path(clients.client_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    context.log.info(f"wrote {len(frame):,} stream events for {today} to {path}")
    return dg.MaterializeResult(
        metadata={"dagster/row_count": len(frame), "path": dg.MetadataValue.path(str(path)),
                  "download_date": str(today), "preview": _preview(frame.drop(columns=["name"]))}
    )


assets = [playstore_apps_raw, playstore_apps, users_batch, users_stream,
          users_app_batch_client_data, users_app_stream_client_data]
