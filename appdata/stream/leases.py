"""Shard leases and checkpoints in a DynamoDB table, as the Kinesis Client Library keeps them.

One item per shard (key `shard` = "<stream>/<shard id>") says who drains the shard now
(`owner`, until `lease_expires_ms`), how far every sink holds it (`checkpoint`: the last sequence
number delivered, and `checkpoint_arrival`: that record's arrival time, which tells it from another
record given the same number by a stream that lost records), which range is being written (`pending_first`..`pending_last`, recorded before
the first sink write) and whether a closed shard is delivered to its end (`shard_end`).

Why it exists: a drain that lives longer than one range must keep its position where the next
consumer finds it, and only one consumer may read a shard at a time. Every write is conditional
on still owning the lease, so a consumer that stalled past its lease cannot start a new range
after another one took over; the range it may be finishing is the `pending` one, which the new
owner re-drains first with the same bounds, hence the same keys in every sink (exactly-once
effects). Lease expiry uses the writers' wall clocks: the lease time must dwarf their skew.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from appdata import aws
from appdata.aws import error_code

KEY = "shard"


class LeaseLost(RuntimeError):
    """Another consumer holds the shard's lease now: stop, without writing anything more."""


@dataclass(frozen=True)
class ShardLease:
    """One shard's lease item, as read."""

    stream: str
    shard_id: str
    owner: str | None = None
    lease_expires_ms: int = 0
    checkpoint: str | None = None
    checkpoint_arrival: str | None = None  # ISO time the checkpoint's record arrived on the stream
    pending_first: str | None = None
    pending_last: str | None = None
    shard_end: bool = False
    stream_created: str | None = None

    @property
    def pending(self) -> tuple[str, str] | None:
        return (self.pending_first, self.pending_last) if self.pending_first and self.pending_last else None

    def held_by_other(self, owner: str, now_ms: int) -> bool:
        return self.owner is not None and self.owner != owner and self.lease_expires_ms > now_ms


def shard_key(stream: str, shard_id: str) -> str:
    return f"{stream}/{shard_id}"


def now_ms() -> int:
    return int(time.time() * 1000)


def _lease(stream: str, shard_id: str, item: dict | None) -> ShardLease:
    if not item:
        return ShardLease(stream, shard_id)
    values = aws.from_item(item)
    return ShardLease(
        stream, shard_id, owner=values.get("owner"), lease_expires_ms=int(values.get("lease_expires_ms", 0)),
        checkpoint=values.get("checkpoint"), checkpoint_arrival=values.get("checkpoint_arrival"),
        pending_first=values.get("pending_first"),
        pending_last=values.get("pending_last"), shard_end=bool(values.get("shard_end", False)),
        stream_created=values.get("stream_created"),
    )


class LeaseTable:
    """The lease items of one stream, over a boto3 DynamoDB client."""

    def __init__(self, dynamodb: Any, table: str, stream: str):
        self.dynamodb = dynamodb
        self.table = table
        self.stream = stream

    def _key(self, shard_id: str) -> dict:
        return {KEY: {"S": shard_key(self.stream, shard_id)}}

    def get(self, shard_id: str) -> ShardLease:
        item = self.dynamodb.get_item(TableName=self.table, Key=self._key(shard_id), ConsistentRead=True).get("Item")
        return _lease(self.stream, shard_id, item)

    def acquire(self, shard_id: str, owner: str, lease_seconds: float) -> ShardLease | None:
        """Take the lease if it is free, expired or already ours; None when another holds it."""
        now = now_ms()
        try:
            item = self.dynamodb.update_item(
                TableName=self.table, Key=self._key(shard_id),
                UpdateExpression="SET #o = :me, lease_expires_ms = :until",
                ConditionExpression="attribute_not_exists(#o) OR #o = :me OR lease_expires_ms < :now",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": {"S": owner}, ":until": {"N": str(now + int(lease_seconds * 1000))},
                                           ":now": {"N": str(now)}},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return _lease(self.stream, shard_id, item)

    def _owned_update(self, shard_id: str, owner: str, update: str, values: dict | None = None) -> None:
        try:
            self.dynamodb.update_item(
                TableName=self.table, Key=self._key(shard_id), UpdateExpression=update,
                ConditionExpression="#o = :me", ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": {"S": owner}, **(values or {})},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise LeaseLost(f"{shard_key(self.stream, shard_id)}: the lease is no longer {owner}'s") from exc
            raise

    def renew(self, shard_id: str, owner: str, lease_seconds: float) -> None:
        self._owned_update(shard_id, owner, "SET lease_expires_ms = :until",
                           {":until": {"N": str(now_ms() + int(lease_seconds * 1000))}})

    def begin_range(self, shard_id: str, owner: str, first: str, last: str, lease_seconds: float) -> None:
        """Record the range about to be written (write-ahead), renewing the lease."""
        self._owned_update(shard_id, owner, "SET pending_first = :f, pending_last = :l, lease_expires_ms = :until",
                           {":f": {"S": first}, ":l": {"S": last},
                            ":until": {"N": str(now_ms() + int(lease_seconds * 1000))}})

    def commit_range(self, shard_id: str, owner: str, last: str, *, arrival: str | None = None,
                     shard_end: bool = False) -> None:
        """Every sink holds the pending range: move the checkpoint past it (`arrival`: the arrival
        time of its last record)."""
        self._set_checkpoint(shard_id, owner, last, arrival, "shard_end = :e", {":e": {"BOOL": shard_end}})

    def rewind(self, shard_id: str, owner: str, checkpoint: str | None, arrival: str | None) -> None:
        """Move the checkpoint back to the last delivered record the stream still holds (None: before
        its first), forgetting the pending range: a stream that lost records gave their sequence
        numbers to others, so the saved bounds name records that were never delivered."""
        self._set_checkpoint(shard_id, owner, checkpoint, arrival)

    def _set_checkpoint(self, shard_id: str, owner: str, checkpoint: str | None, arrival: str | None,
                        also: str = "", values: dict | None = None) -> None:
        """SET the checkpoint and its arrival (REMOVE each that is None), REMOVE the pending range."""
        given = {"checkpoint": checkpoint, "checkpoint_arrival": arrival if checkpoint else None}
        sets = [f"{name} = :{name}" for name, value in given.items() if value] + ([also] if also else [])
        removed = [name for name, value in given.items() if not value] + ["pending_first", "pending_last"]
        self._owned_update(shard_id, owner, (f"SET {', '.join(sets)} " if sets else "") + f"REMOVE {', '.join(removed)}",
                           {**{f":{name}": {"S": value} for name, value in given.items() if value}, **(values or {})})

    def mark_shard_end(self, shard_id: str, owner: str) -> None:
        self._owned_update(shard_id, owner, "SET shard_end = :e", {":e": {"BOOL": True}})

    def reset(self, shard_id: str, owner: str, stream_created: str) -> None:
        """Forget a checkpoint that belongs to another incarnation of the stream (re-created, or
        an emulator that lost its state): its sequence numbers point nowhere in this one."""
        self._owned_update(shard_id, owner,
                           "SET stream_created = :c, shard_end = :e "
                           "REMOVE checkpoint, checkpoint_arrival, pending_first, pending_last",
                           {":c": {"S": stream_created}, ":e": {"BOOL": False}})

    def release(self, shard_id: str, owner: str) -> None:
        """Give the lease up (the successor takes it at once); a lease already lost is fine."""
        try:
            self._owned_update(shard_id, owner, "REMOVE #o, lease_expires_ms")
        except LeaseLost:
            pass
