"""Recommendations: structure in the generated data, quality against popularity, DynamoDB items."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from appdata import aws
from appdata.analytics import marts, recommend
from appdata.contract import layout
from appdata.sources.catalogue import clean_catalogue, load_catalogue
from appdata.warehouse.loader import bulk_insert, create_schema, replace_all
from appdata_tests.support.analytics import FIRST_DAY, generated


@pytest.fixture(scope="module")
def catalogue() -> pd.DataFrame:
    raw, _ = load_catalogue(None, seed=7)
    apps, _ = clean_catalogue(raw)
    return apps


def top3_category_share(events: pd.DataFrame) -> float:
    counts = events.groupby(["user_id", "category"]).size().rename("n").reset_index()
    counts = counts.sort_values(["user_id", "n"], ascending=[True, False])
    top3 = counts[counts.groupby("user_id").cumcount() < 3].groupby("user_id")["n"].sum()
    return float((top3 / counts.groupby("user_id")["n"].sum()).mean())


def test_taste_data_has_structure_and_uniform_reproduces_the_seed(catalogue: pd.DataFrame) -> None:
    taste = generated(catalogue, "taste")
    uniform = generated(catalogue, "uniform")
    # Each user's three biggest categories hold most of their downloads with taste, few without.
    assert top3_category_share(taste) > 0.6
    assert top3_category_share(uniform) < 0.45
    assert top3_category_share(taste) > top3_category_share(uniform) + 0.25


def test_recommender_beats_most_popular_on_taste_data(catalogue: pd.DataFrame) -> None:
    user_apps = recommend.user_apps_from_events(generated(catalogue, "taste"))
    evaluation = recommend.evaluate(user_apps)
    assert evaluation.users >= 500
    assert evaluation.hit_rate > evaluation.baseline_hit_rate
    assert evaluation.hits >= 2 * max(evaluation.baseline_hits, 1)
    meta = evaluation.as_metadata()
    assert meta["hit_rate_at_10"] > meta["baseline_most_popular_hit_rate_at_10"]
    # Keeping each app's MAX_NEIGHBOURS most similar apps (a bounded model) costs no hit.
    assert evaluation.hits >= recommend.evaluate(user_apps, max_neighbours=10**9).hits


def test_ten_new_apps_per_user_and_charts_for_little_history(catalogue: pd.DataFrame) -> None:
    events = generated(catalogue, "taste", users=300, days=5, rows=1500)
    lone = events.iloc[[0]].assign(user_id=999_999, event_id="lone")  # a user with one download
    user_apps = recommend.user_apps_from_events(pd.concat([events, lone], ignore_index=True))
    model = recommend.Recommender(user_apps, recommend.charts_from_user_apps(user_apps))
    users = sorted(user_apps["user_id"].unique())
    recs = model.recommend(users + [123_456_789])  # and a user never seen
    assert len(recs) == len(users) + 1
    for rec in recs:
        apps = [a["app"] for a in rec.apps]
        assert len(apps) == 10 and len(set(apps)) == 10
        assert not set(apps) & model.downloaded(rec.user_id), rec.user_id
        assert all(a["category"] for a in rec.apps)
        scores = [a["score"] for a in rec.apps]
        assert scores == sorted(scores, reverse=True)
    by_user = {r.user_id: r for r in recs}
    assert by_user[999_999].method == recommend.METHOD_CHARTS
    assert by_user[123_456_789].method == recommend.METHOD_CHARTS
    # The lone user's charts come from the category of their one download first.
    lone_category = lone["category"].iloc[0]
    assert by_user[999_999].apps[0]["category"] == lone_category
    rich = [r for r in recs if len(model.downloaded(r.user_id)) >= recommend.MIN_HISTORY]
    assert rich and all(r.method == recommend.METHOD_COOCCURRENCE for r in rich)


def _rec_item(client, table: str, user_id: int) -> dict:
    item = client.get_item(TableName=table, Key={"user_id": {"S": str(user_id)}, "sk": {"S": "REC"}})["Item"]
    return {
        "apps": [{k: list(v.values())[0] for k, v in a["M"].items()} for a in item["apps"]["L"]],
        "method": item["method"]["S"], "generated_at": item["generated_at"]["S"],
    }


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def sinks(request, provisioned: dict) -> dict:
    """The warehouse (embedded DuckDB or PostgreSQL) with the emulator's bucket and table."""
    if request.param == "duckdb":
        engine = provisioned["warehouse"].get_engine()
    else:
        engine = sa.create_engine(request.getfixturevalue("postgres_url"), poolclass=sa.pool.NullPool)
    create_schema(engine)
    s3, dynamodb = provisioned["s3"], provisioned["dynamodb"]
    yield {"engine": engine, "s3": s3.get_client(), "bucket": s3.bucket, "dynamodb": dynamodb.get_client(),
           "table": dynamodb.table_name}
    engine.dispose()


def _touched(sinks: dict, users) -> recommend.TouchedRefresh:
    return recommend.refresh_touched_users(sinks["engine"], sinks["s3"], sinks["bucket"], sinks["dynamodb"],
                                           sinks["table"], users)


def _seed(sinks: dict, catalogue: pd.DataFrame) -> pd.DataFrame:
    events = generated(catalogue, "taste", users=300, days=5, rows=1500)
    little = events.drop_duplicates("app").head(2).assign(user_id=999_999, event_id=["little-1", "little-2"])
    events = pd.concat([events, little], ignore_index=True)  # a user with too little history for co-occurrence
    replace_all(sinks["engine"], "downloads_stream", events)
    marts.build_mart(sinks["engine"], "mart_charts")
    return events


def _stream_event(events: pd.DataFrame, user_id: int, app: str, category: str, n: int) -> pd.DataFrame:
    """One more stream download of `app` by `user_id`, a day after the generated history."""
    new = events.head(1).copy()
    for column, value in {"user_id": user_id, "app": app, "category": category, "event_id": f"new-{n}",
                          "download_date": FIRST_DAY + dt.timedelta(days=6)}.items():
        new[column] = value
    return new


def test_incremental_refresh_equals_a_full_refit_while_the_model_is_fresh(sinks: dict, catalogue: pd.DataFrame) -> None:
    events = _seed(sinks, catalogue)
    full = recommend.refresh_all_recommendations(sinks["engine"], sinks["s3"], sinks["bucket"], sinks["dynamodb"],
                                                 sinks["table"])
    assert full.items_written == events["user_id"].nunique()
    assert aws.object_exists(sinks["s3"], sinks["bucket"], layout.RECOMMENDER_MODEL_KEY)
    by_user = {r.user_id: r for r in full.recommendations}
    counts = events.groupby("user_id")["app"].nunique()
    users = sorted(counts.index[:40]) + [int(counts.idxmin())]  # some users, the one with least history
    assert counts.min() < recommend.MIN_HISTORY  # so the charts path is compared too
    client = sinks["dynamodb"]
    for user in users:  # what is read back below must be the incremental refresh's
        client.delete_item(TableName=sinks["table"], Key={"user_id": {"S": str(user)}, "sk": {"S": "REC"}})

    recommend._models.clear()  # as a fresh process: the model comes from S3
    done = _touched(sinks, users)
    assert (done.items_written, done.users, done.model_fitted_now, done.unknown_apps) == (len(users), len(users), False, 0)
    assert done.model_fitted_at == full.model.fitted_at and done.model_age_seconds() >= 0
    for user in users:
        item = _rec_item(client, sinks["table"], user)
        expected = by_user[user]
        assert item["method"] == expected.method
        assert [(a["app"], a["category"], float(a["score"])) for a in item["apps"]] == \
            [(a["app"], a["category"], a["score"]) for a in expected.apps]
    assert _touched(sinks, []) == recommend.TouchedRefresh(0, 0, None, False, 0)


def test_incremental_refresh_follows_new_downloads_new_users_and_apps_newer_than_the_model(
        sinks: dict, catalogue: pd.DataFrame) -> None:
    events = _seed(sinks, catalogue)
    first = _touched(sinks, [])  # nothing asked: not even a model is made
    assert first.model_fitted_at is None and not aws.object_exists(sinks["s3"], sinks["bucket"], layout.RECOMMENDER_MODEL_KEY)
    user = int(events["user_id"].value_counts().index[0])  # the busiest user
    done = _touched(sinks, [user])  # no model saved yet: fitted once from the warehouse, and saved
    assert done.model_fitted_now and aws.object_exists(sinks["s3"], sinks["bucket"], layout.RECOMMENDER_MODEL_KEY)
    client, table = sinks["dynamodb"], sinks["table"]
    before = _rec_item(client, table, user)
    assert before["method"] == recommend.METHOD_COOCCURRENCE and len(before["apps"]) == 10
    assert not {a["app"] for a in before["apps"]} & set(events.loc[events["user_id"] == user, "app"])
    assert dt.datetime.fromisoformat(before["generated_at"]).tzinfo is not None

    # The user downloads the top recommendation and an app published after the model was fitted;
    # a user the model never saw downloads three known apps; another never downloaded anything.
    taken, category = before["apps"][0]["app"], before["apps"][0]["category"]
    newcomer, nobody = 900_001, 900_002
    known_apps = events.drop_duplicates("app").head(3)
    new = pd.concat([_stream_event(events, user, taken, category, 0),
                     _stream_event(events, user, "Brand New App", category, 1),
                     *[_stream_event(events, newcomer, a, c, 2 + i)
                       for i, (a, c) in enumerate(zip(known_apps["app"], known_apps["category"]))]], ignore_index=True)
    with sinks["engine"].begin() as conn:
        bulk_insert(conn, "downloads_stream", new)
    done = _touched(sinks, [user, newcomer, nobody])
    assert (done.items_written, done.model_fitted_now, done.unknown_apps) == (3, False, 1)

    after = _rec_item(client, table, user)
    apps = [a["app"] for a in after["apps"]]
    assert len(apps) == 10 and taken not in apps and "Brand New App" not in apps
    assert after["method"] == recommend.METHOD_COOCCURRENCE
    fresh = _rec_item(client, table, newcomer)
    assert fresh["method"] == recommend.METHOD_COOCCURRENCE and len(fresh["apps"]) == 10
    assert not {a["app"] for a in fresh["apps"]} & set(known_apps["app"])
    charts = _rec_item(client, table, nobody)
    assert charts["method"] == recommend.METHOD_CHARTS and len(charts["apps"]) == 10

    # The next full refit learns the new app: nothing is newer than the model any more.
    recommend.refresh_all_recommendations(sinks["engine"], sinks["s3"], sinks["bucket"], client, table)
    again = _touched(sinks, [user])
    assert again.unknown_apps == 0 and again.model_fitted_at != done.model_fitted_at


def test_the_saved_model_is_downloaded_again_only_when_its_etag_changes(provisioned: dict, catalogue: pd.DataFrame) -> None:
    s3, bucket = provisioned["s3"].get_client(), provisioned["s3"].bucket
    user_apps = recommend.user_apps_from_events(generated(catalogue, "taste", users=80, days=2, rows=300))
    charts = recommend.charts_from_user_apps(user_apps)
    recommend._models.clear()
    assert recommend.load_model(s3, bucket) is None
    saved = recommend.RecommenderModel.fit(user_apps, charts)
    recommend.save_model(s3, bucket, saved)
    assert recommend.load_model(s3, bucket) is saved  # this process wrote it: kept, not read back
    recommend._models.clear()
    loaded = recommend.load_model(s3, bucket)
    assert loaded is not saved and loaded.fitted_at == saved.fitted_at
    assert recommend.load_model(s3, bucket) is loaded  # same ETag: the copy in memory
    # Another process saves a newer fit: the next load sees a new ETag and downloads it.
    newer = recommend.RecommenderModel.fit(user_apps, charts, fitted_at=saved.fitted_at + dt.timedelta(hours=1))
    s3.put_object(Bucket=bucket, Key=layout.RECOMMENDER_MODEL_KEY, Body=newer.to_bytes())
    assert recommend.load_model(s3, bucket).fitted_at == newer.fitted_at
    s3.delete_object(Bucket=bucket, Key=layout.RECOMMENDER_MODEL_KEY)
    assert recommend.load_model(s3, bucket) is None


def test_the_model_round_trips_exactly_and_nothing_is_unpickled(catalogue: pd.DataFrame) -> None:
    user_apps = recommend.user_apps_from_events(generated(catalogue, "taste", users=200, days=3, rows=800))
    model = recommend.RecommenderModel.fit(user_apps, recommend.charts_from_user_apps(user_apps))
    copy = recommend.RecommenderModel.from_bytes(model.to_bytes())
    assert list(copy.app_names) == list(model.app_names) and copy.fitted_at == model.fitted_at
    assert (copy.similarity != model.similarity).nnz == 0 and np.array_equal(copy.popularity, model.popularity)
    histories = model.histories(user_apps)
    users = histories.user_ids.tolist()
    assert [(r.apps, r.method) for r in copy.recommend(histories, users)] == \
        [(r.apps, r.method) for r in model.recommend(histories, users)]
    # An object array in the file (what a pickle would smuggle in) is refused, not loaded.
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array([{"format": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        recommend.RecommenderModel.from_bytes(buffer.getvalue())


def test_the_model_keeps_the_most_similar_apps_of_each_app(catalogue: pd.DataFrame) -> None:
    """Pruning bounds the model's size (and a user's scoring cost) whatever the history."""
    user_apps = recommend.user_apps_from_events(generated(catalogue, "taste", users=300, days=5, rows=1500))
    charts = recommend.charts_from_user_apps(user_apps)
    whole = recommend.RecommenderModel.fit(user_apps, charts, max_neighbours=10**9).similarity
    pruned = recommend.RecommenderModel.fit(user_apps, charts, max_neighbours=5).similarity
    assert np.diff(whole.indptr).max() > 5 and np.diff(pruned.indptr).max() == 5
    for row in range(whole.shape[0]):
        kept = pruned[row].toarray().ravel()
        full = whole[row].toarray().ravel()
        assert np.array_equal(kept[kept > 0], full[kept > 0])  # kept entries unchanged
        if (kept > 0).sum() == 5:
            assert kept[kept > 0].min() >= full[kept == 0].max()  # and they are the largest


def test_batch_write_covers_more_than_one_page(provisioned: dict, catalogue: pd.DataFrame) -> None:
    dynamodb = provisioned["dynamodb"]
    events = generated(catalogue, "taste", users=60, days=2, rows=400)
    user_apps = recommend.user_apps_from_events(events)
    model = recommend.Recommender(user_apps, recommend.charts_from_user_apps(user_apps))
    recs = model.recommend(sorted(user_apps["user_id"].unique()))
    assert len(recs) > 2 * aws.BATCH_WRITE_LIMIT
    assert recommend.write_recommendations(dynamodb.get_client(), dynamodb.table_name, recs) == len(recs)
    client = dynamodb.get_client()
    for rec in (recs[0], recs[-1]):
        assert [a["app"] for a in _rec_item(client, dynamodb.table_name, rec.user_id)["apps"]] == [a["app"] for a in rec.apps]
