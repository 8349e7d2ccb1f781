"""Erasure requests carried out: the user's rows removed from every place, the removal proven.

`carry_out` erases (`erase`), proves (`verify`), erases again (every object) what the proof
still found, and records the outcome in the request log (`log`); run twice, it finds the
request done.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

import sqlalchemy as sa
from pyiceberg.table import Table

from appdata.privacy import erase, verify
from appdata.privacy.log import ErasureRequest, load, save, user_of


@dataclass
class Places:
    """Every store an erasure reaches, and how to rebuild what is derived from them."""

    s3: Any
    bucket: str
    table: Callable[[], Table]
    dynamodb: Any
    dynamodb_table: str
    engine: sa.Engine
    rebuild_marts: Callable[[sa.Engine], Any]
    refit_recommender: Callable[[sa.Engine], dt.datetime]  # returns the new model's fitted_at
    model_fitted_at: Callable[[], dt.datetime | None]


def erase_user(user_id: int, places: Places, *, every_object: bool = False) -> dict[str, int]:
    """Rows removed per place. Objects are read for the user's days (from the warehouse and the
    table before deletion), or all of them (`every_object`)."""
    table = places.table()
    if every_object:
        keys = erase.object_keys(places.s3, places.bucket)
    else:
        days = erase.warehouse_days(places.engine, user_id)
        days |= {day.isoformat() for day in table.scan(
            row_filter=f"user_id = {int(user_id)}", selected_fields=("download_date",)).to_arrow()
            .column("download_date").to_pylist()}
        keys = erase.keys_for_days(places.s3, places.bucket, days)
    removed = {f"s3 {area}": n for area, n in erase.erase_objects(places.s3, places.bucket, user_id, keys).items()}
    rows, files = erase.erase_table(table, places.s3, user_id, expire=every_object)
    removed["lake table rows"], removed["lake table files of old snapshots"] = rows, files
    removed["dynamodb items"] = erase.erase_dynamodb(places.dynamodb, places.dynamodb_table, user_id)
    removed["warehouse rows"] = erase.erase_warehouse(places.engine, user_id, places.rebuild_marts)
    if removed["warehouse rows"] or every_object:  # the model learnt only from warehouse rows
        places.refit_recommender(places.engine)
    return {place: n for place, n in removed.items() if n}


def traces_of(user_id: int, places: Places, erased_at: dt.datetime | None) -> dict[str, int]:
    return verify.traces(user_id=user_id, s3=places.s3, bucket=places.bucket, table=places.table(),
                         dynamodb=places.dynamodb, dynamodb_table=places.dynamodb_table, engine=places.engine,
                         model_fitted_at=places.model_fitted_at(), erased_at=erased_at)


def carry_out(request_id: str, places: Places) -> ErasureRequest:
    """Erase the request's user everywhere, prove it, and record the outcome (idempotent)."""
    request = load(places.s3, places.bucket, request_id)
    if request.status == "done":
        return request
    user_id = user_of(places.s3, places.bucket, request_id)
    if user_id is None:
        raise LookupError(f"erasure request {request_id} names no user on the forgotten list")
    started = dt.datetime.now(dt.timezone.utc)
    request.status, request.started_at = "in_progress", started.isoformat()
    save(places.s3, places.bucket, request)  # the sensor leaves it to this run (`log.waiting`)
    removed = erase_user(user_id, places)
    learnt = started if removed.get("warehouse rows") else None  # a model fitted before then knew the user
    left = traces_of(user_id, places, learnt)
    if left:  # events on their way when it was filed, or rows on no day the sinks know (a landing
        # file not loaded yet, a row the ETL refused): once more, every object read
        for place, n in erase_user(user_id, places, every_object=True).items():
            removed[place] = removed.get(place, 0) + n
        left = traces_of(user_id, places, started)
    request.removed, request.traces = removed, left
    request.status = "done" if not left else "pending"
    request.completed_at = dt.datetime.now(dt.timezone.utc).isoformat()
    save(places.s3, places.bucket, request)
    return request
