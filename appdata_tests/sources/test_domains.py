"""The generators make only events inside the contract's closed domains (category, content
rating, location), on the synthetic catalogue and on the real Kaggle file."""

from __future__ import annotations

import datetime as dt

import pytest

from appdata.contract import schema
from appdata.sources.catalogue import CATEGORIES, clean_catalogue, parse_raw_catalogue, read_raw_catalogue, synthetic_catalogue_csv
from appdata.sources.users import downloads_for_day, make_users

HEADER = "App,Category,Rating,Reviews,Size,Installs,Type,Price,Content Rating,Genres,Last Updated,Current Ver,Android Ver\n"


def _downloads_are_valid(apps) -> None:
    users = make_users(300, 1, 42, sorted(apps["category"].unique()), "stream")
    assert set(users["location"]) <= set(schema.LOCATIONS)
    events = downloads_for_day(apps, users, dt.date(2024, 1, 1), source="stream", seed=42, rows=3_000)
    checked = schema.validate_records(events)
    assert checked.counts == {"valid": 3_000, "rejected": 0}, checked.rejected.head()


def test_the_synthetic_catalogue_and_its_downloads_stay_inside_the_domains() -> None:
    assert set(CATEGORIES) <= set(schema.CATEGORIES)
    apps, _ = clean_catalogue(parse_raw_catalogue(synthetic_catalogue_csv(n_apps=2_000)))
    assert set(apps["category"]) <= set(schema.CATEGORIES)
    assert set(apps["content_rating"]) <= set(schema.CONTENT_RATINGS)
    _downloads_are_valid(apps)


@pytest.mark.realdata
def test_the_real_catalogue_is_inside_the_domains(real_catalogue) -> None:
    """Every category and rating of the Kaggle file is in the domain: no app is quarantined for it."""
    apps, report = clean_catalogue(read_raw_catalogue(real_catalogue))
    assert not [q for q in report.quarantined if "event contract" in q["reason"]]
    assert set(apps["category"]) == set(schema.CATEGORIES)
    assert set(apps["content_rating"]) == set(schema.CONTENT_RATINGS)
    _downloads_are_valid(apps)


def test_a_catalogue_row_outside_the_domains_is_quarantined_by_name() -> None:
    rows = ('Alpha,GAME,4.5,100,19M,"10,000+",Free,0,Everyone,Action,"January 7, 2018",1.0,4.0 and up\n'
            'Beta,NEW_THING,4.5,100,19M,"10,000+",Free,0,Everyone,Action,"January 7, 2018",1.0,4.0 and up\n'
            'Gamma,GAME,4.5,100,19M,"10,000+",Free,0,<b>Kids</b>,Action,"January 7, 2018",1.0,4.0 and up\n')
    apps, report = clean_catalogue(parse_raw_catalogue(HEADER + rows))
    assert list(apps["app"]) == ["Alpha"]
    assert [(q["app"], q["reason"]) for q in report.quarantined] == [
        ("Beta", "Category: not a category of the event contract"),
        ("Gamma", "Content Rating: not a rating of the event contract")]
