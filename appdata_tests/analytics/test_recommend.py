"""Recommendations: structure in the generated data, quality against popularity, DynamoDB items."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from appdata import aws
from appdata.analytics import marts, recommend
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
    evaluation = recommend.evaluate(recommend.user_apps_from_events(generated(catalogue, "taste")))
    assert evaluation.users >= 500
    assert evaluation.hit_rate > evaluation.baseline_hit_rate
    assert evaluation.hits >= 2 * max(evaluation.baseline_hits, 1)
    meta = evaluation.as_metadata()
    assert meta["hit_rate_at_10"] > meta["baseline_most_popular_hit_rate_at_10"]


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


def test_refresh_writes_rec_items_and_follows_a_new_download(provisioned: dict, catalogue: pd.DataFrame) -> None:
    warehouse, dynamodb = provisioned["warehouse"], provisioned["dynamodb"]
    engine = warehouse.get_engine()
    events = generated(catalogue, "taste", users=300, days=5, rows=1500)
    create_schema(engine)
    replace_all(engine, "downloads_stream", events)
    marts.build_mart(engine, "mart_charts")
    user = int(events["user_id"].value_counts().index[0])  # the busiest user
    other = int(events["user_id"].value_counts().index[1])

    assert recommend.refresh_user_recommendations(engine, dynamodb, [user, other]) == 2
    client = dynamodb.get_client()
    first = _rec_item(client, dynamodb.table_name, user)
    assert first["method"] == recommend.METHOD_COOCCURRENCE
    assert len(first["apps"]) == 10
    downloaded = set(events.loc[events["user_id"] == user, "app"])
    assert not {a["app"] for a in first["apps"]} & downloaded
    assert dt.datetime.fromisoformat(first["generated_at"]).tzinfo is not None
    assert float(first["apps"][0]["score"]) >= float(first["apps"][-1]["score"])

    # The user downloads the top recommendation: it leaves their list, another comes in.
    taken = first["apps"][0]["app"]
    new = events[events["app"] == taken].head(1).copy()
    if new.empty:
        new = events.head(1).copy()
        new["app"], new["category"] = taken, first["apps"][0]["category"]
    row = events[events["user_id"] == user].iloc[0]
    for column in ("user_id", "name", "location", "age"):
        new[column] = row[column]
    new["event_id"], new["download_date"] = "new-download", FIRST_DAY + dt.timedelta(days=6)
    with engine.begin() as conn:
        bulk_insert(conn, "downloads_stream", new)
    assert recommend.refresh_user_recommendations(engine, dynamodb, [user]) == 1
    second = _rec_item(client, dynamodb.table_name, user)
    assert taken not in {a["app"] for a in second["apps"]}
    assert len(second["apps"]) == 10
    assert recommend.refresh_user_recommendations(engine, dynamodb, []) == 0
    engine.dispose()


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
