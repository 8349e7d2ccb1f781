"""Forgetting users as Dagster objects (group `privacy`): the erasure requests as an asset whose
runs carry them out, the sensor that starts such a run when a request is filed (API or CLI),
and the check that proves no forgotten user left a trace anywhere (`appdata.privacy`)."""

import datetime as dt

import dagster as dg
import sqlalchemy as sa

from appdata.analytics.marts import build_all_marts
from appdata.analytics.recommend import load_model, refresh_all_recommendations
from appdata.defs.resources import (
    TRANSIENT_IO_RETRY, DynamoDBResource, LakeS3Resource, LakeTableResource, WarehouseResource,
)
from appdata.privacy import forgotten, log as request_log, requests

GROUP = "privacy"
ASSET = dg.AssetKey("erasure_requests")


def erasure_places(s3: LakeS3Resource, dynamodb: DynamoDBResource, lake_table: LakeTableResource,
                   engine: sa.Engine) -> requests.Places:
    """Every store an erasure reaches, from the resources (also what `appdata forget` uses)."""
    client, dynamodb_client = s3.get_client(), dynamodb.get_client()

    def refit(engine: sa.Engine) -> dt.datetime:
        return refresh_all_recommendations(engine, client, s3.bucket, dynamodb_client,
                                           dynamodb.table_name).recommender.model.fitted_at

    def model_fitted_at() -> dt.datetime | None:
        model = load_model(client, s3.bucket)
        return model.fitted_at if model is not None else None

    return requests.Places(s3=client, bucket=s3.bucket, table=lake_table.open, dynamodb=dynamodb_client,
                           dynamodb_table=dynamodb.table_name, engine=engine, rebuild_marts=build_all_marts,
                           refit_recommender=refit, model_fitted_at=model_fitted_at)


@dg.asset(
    key=ASSET,
    group_name=GROUP,
    retry_policy=TRANSIENT_IO_RETRY,
    pool="warehouse",
    kinds={"s3", "python"},
    check_specs=[dg.AssetCheckSpec("forgotten_users_leave_no_trace", asset=ASSET,
                                   description="Every place a forgotten user's data could be (table files of every "
                                   "snapshot, raw archive, landing, curated, dead letters, asset values, DynamoDB, "
                                   "warehouse and marts, the recommender) read in full: no trace.")],
    description="The erasure request log (s3://<bucket>/privacy/requests/): each run carries out the pending "
    "requests (the user's rows removed from every copy, marts and recommender rebuilt) and records the rows "
    "removed per place, without personal data.",
)
def erasure_requests(context: dg.AssetExecutionContext, s3: LakeS3Resource, dynamodb: DynamoDBResource,
                     lake_table: LakeTableResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    client = s3.get_client()
    log = request_log.all_requests(client, s3.bucket)
    with warehouse.connect() as engine:
        places = erasure_places(s3, dynamodb, lake_table, engine)
        done = []
        now = dt.datetime.now(dt.timezone.utc)
        for request in [r for r in log if request_log.waiting(r, now)]:
            outcome = requests.carry_out(request.request_id, places)
            done.append(outcome)
            context.log.info(f"erasure {outcome.request_id}: {outcome.status}; removed {outcome.removed}"
                             + (f"; traces left: {outcome.traces}" if outcome.traces else ""))
        left = {}
        for user_id in sorted(forgotten.read(client, s3.bucket)):
            found = requests.traces_of(user_id, places, None)
            if found:
                left[requests_of(log, client, s3.bucket, user_id)] = found
    return dg.MaterializeResult(
        metadata={"requests": len(log), "carried_out": len(done),
                  "removed": dg.MetadataValue.json({r.request_id: r.removed for r in done}),
                  "pending": sum(1 for r in request_log.all_requests(client, s3.bucket) if r.status != "done")},
        check_results=[dg.AssetCheckResult(
            check_name="forgotten_users_leave_no_trace", passed=not left,
            description=("no trace of any forgotten user" if not left else
                         "; ".join(f"request {rid}: {', '.join(f'{place} {n}' for place, n in found.items())}"
                                   for rid, found in left.items())),
            metadata={"users_checked": len(forgotten.read(client, s3.bucket)),
                      "traces": dg.MetadataValue.json(left)})],
    )


def requests_of(log: list[request_log.ErasureRequest], s3, bucket: str, user_id: int) -> str:
    """The request id that forgot `user_id` (the check names requests, never users)."""
    ids = {r.request_id for r in log}
    entry = forgotten.entry(s3, bucket, user_id)
    return entry.get("request_id", "?") if entry.get("request_id") in ids else "?"


erasure_job = dg.define_asset_job("forget_users", selection=dg.AssetSelection.assets(ASSET),
                                  description="Carry out the pending erasure requests and prove them.")


@dg.sensor(job=erasure_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="A run of forget_users for each erasure request filed (API or CLI) and not yet done.")
def erasure_request_sensor(context: dg.SensorEvaluationContext, s3: LakeS3Resource):
    now = dt.datetime.now(dt.timezone.utc)
    pending = [r.request_id for r in request_log.all_requests(s3.get_client(), s3.bucket)
               if request_log.waiting(r, now)]
    if not pending:
        return dg.SkipReason("no erasure request pending")
    # The hour in the key: a run that failed is asked again within the hour, never left for good.
    hour = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H")
    return dg.RunRequest(run_key="+".join(sorted(pending)) + "@" + hour)
