"""Every cleaning rule of the catalogue, on small hand-made files and on the real Kaggle file."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from appdata.sources.catalogue import (
    CatalogueError,
    clean_catalogue,
    parse_raw_catalogue,
    read_raw_catalogue,
    synthetic_catalogue_csv,
)

HEADER = "App,Category,Rating,Reviews,Size,Installs,Type,Price,Content Rating,Genres,Last Updated,Current Ver,Android Ver\n"
ROW_A = 'Alpha,GAME,4.5,100,19M,"10,000+",Free,0,Everyone,Action,"January 7, 2018",1.0,4.0 and up\n'
ROW_B = 'Beta,TOOLS,NaN,5,201k,"1,000+",Paid,$4.99,Teen,Tools,"March 3, 2017",NaN,NaN\n'
ROW_C = 'Gamma,SOCIAL,3.0,7,Varies with device,"500+",NaN,0,Everyone,Social,"June 1, 2016",2.1,5.0 and up\n'


def clean(text: str):
    return clean_catalogue(parse_raw_catalogue(text))


def test_types_every_field():
    apps, report = clean(HEADER + ROW_A + ROW_B + ROW_C)
    alpha, beta, gamma = (apps.set_index("app").loc[n] for n in ("Alpha", "Beta", "Gamma"))
    assert alpha["size_mb"] == 19.0 and alpha["installs"] == 10_000 and alpha["reviews"] == 100
    assert alpha["last_updated"] == pd.Timestamp("2018-01-07").date()
    assert beta["size_mb"] == pytest.approx(201 / 1024) and beta["price"] == 4.99 and beta["type"] == "Paid"
    assert pd.isna(gamma["size_mb"]) and report.sizes_varying_with_device == 1
    assert gamma["type"] == "Free" and report.types_inferred_from_price == 1
    assert beta["current_ver"] == "Unknown" and beta["android_ver"] == "Unknown"
    assert report.versions_filled_unknown == 1


def test_nan_rating_filled_with_median_of_kept_apps():
    apps, report = clean(HEADER + ROW_A + ROW_B + ROW_C)
    assert report.ratings_filled_with_median == 1
    assert report.rating_median == pytest.approx(3.75)
    assert apps.set_index("app").loc["Beta", "rating"] == pytest.approx(3.75)
    assert report.null_ratings_after_fill == 0


def test_exact_duplicates_dropped_and_counted():
    apps, report = clean(HEADER + ROW_A + ROW_A + ROW_A + ROW_B)
    assert report.exact_duplicates_dropped == 2
    assert report.apps_out == 2


def test_one_row_per_app_keeps_the_most_reviewed():
    rescrape = ROW_A.replace(",100,", ",250,")
    apps, report = clean(HEADER + ROW_A + rescrape)
    assert report.duplicate_app_rows_dropped == 1
    assert apps.loc[0, "reviews"] == 250


def test_shifted_row_is_repaired_with_its_reason():
    shifted = 'Photo Frame,1.9,19,3.0M,"1,000+",Free,0,Everyone,,"February 11, 2018",1.0.19,4.0 and up\n'
    apps, report = clean(HEADER + ROW_A + shifted)
    row = apps.set_index("app").loc["Photo Frame"]
    assert report.shifted_rows_repaired == 1
    assert row["category"] == "UNKNOWN" and row["rating"] == 1.9 and row["reviews"] == 19
    assert row["size_mb"] == 3.0 and row["installs"] == 1000 and row["genres"] == "Unknown"
    assert report.repaired[0]["line"] == 3 and "shifted" in report.repaired[0]["reason"]


def test_unrepairable_rows_are_quarantined_with_line_and_reason():
    bad_date = ROW_A.replace("Alpha", "Delta").replace('"January 7, 2018"', "7-Jan-18")
    bad_rating = ROW_A.replace("Alpha", "Eps").replace(",4.5,", ",19,")
    too_many = ROW_A.replace("Alpha", "Zeta").rstrip("\n") + ",extra\n"
    apps, report = clean(HEADER + ROW_A + bad_date + bad_rating + too_many)
    assert list(apps["app"]) == ["Alpha"]
    reasons = {q["app"]: (q["line"], q["reason"]) for q in report.quarantined}
    assert reasons["Delta"] == (3, "Last Updated: not like 'January 7, 2018'")
    assert reasons["Eps"][1].startswith("Rating")
    assert reasons["Zeta"][1] == "wrong number of fields"
    assert report.rows_quarantined == 3


def test_wrong_header_and_bad_encoding_are_refused(tmp_path):
    with pytest.raises(CatalogueError, match="header"):
        parse_raw_catalogue("a,b,c\n1,2,3\n")
    with pytest.raises(CatalogueError, match="empty"):
        parse_raw_catalogue("")
    latin = tmp_path / "latin1.csv"
    latin.write_bytes((HEADER + ROW_A).encode() + "Caf\xe9,GAME\n".encode("latin-1"))
    with pytest.raises(CatalogueError, match="UTF-8"):
        read_raw_catalogue(latin)


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + ROW_A).encode())
    apps, _ = clean_catalogue(read_raw_catalogue(path))
    assert list(apps["app"]) == ["Alpha"]


def test_synthetic_catalogue_is_deterministic_and_dirty_like_the_real_one():
    text = synthetic_catalogue_csv()
    assert text == synthetic_catalogue_csv()
    raw = parse_raw_catalogue(text)
    assert 9_500 <= len(raw) <= 10_500
    apps, report = clean_catalogue(raw)
    assert report.exact_duplicates_dropped > 300
    assert report.shifted_rows_repaired == 1
    assert report.ratings_filled_with_median > 1000
    assert report.sizes_varying_with_device > 500
    assert report.duplicate_app_rows_dropped > 100
    assert report.types_inferred_from_price == 1
    assert report.null_ratings_after_fill == 0
    assert apps["app"].is_unique
    assert "$" in text and "Varies with device" in text and ",000+" in text


@pytest.mark.realdata
def test_real_kaggle_file_counts(real_catalogue):
    apps, report = clean_catalogue(read_raw_catalogue(real_catalogue))
    assert report.rows_read == 10_841
    assert report.exact_duplicates_dropped == 483
    assert report.shifted_rows_repaired == 1
    assert report.apps_out == 9_660
    assert report.null_ratings_after_fill == 0
    assert apps["app"].is_unique


@pytest.mark.realdata
def test_catalog_command_reports_json(real_catalogue):
    out = subprocess.run([sys.executable, "-m", "appdata.cli", "catalog", str(real_catalogue), "--json"],
                         capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert (report["rows_read"], report["exact_duplicates_dropped"], report["apps_out"]) == (10_841, 483, 9_660)
    assert report["shifted_rows_repaired"] == 1 and report["null_ratings_after_fill"] == 0
