"""Shard leases on the emulator's DynamoDB: one owner at a time, every write fenced by ownership,
an expired lease taken over, the write-ahead range kept for the next owner."""

from __future__ import annotations

import pytest

from appdata.stream.leases import LeaseLost
from appdata_tests.support.stream import lease_table

SHARD = "shardId-000000000000"


def test_one_owner_at_a_time_and_a_released_lease_is_taken_at_once(provisioned):
    leases = lease_table(provisioned)
    first = leases.acquire(SHARD, "a", lease_seconds=60)
    assert first is not None and first.owner == "a" and first.checkpoint is None
    assert leases.acquire(SHARD, "b", lease_seconds=60) is None
    assert leases.acquire(SHARD, "a", lease_seconds=60) is not None  # its own lease: renewed
    leases.release(SHARD, "a")
    taken = leases.acquire(SHARD, "b", lease_seconds=60)
    assert taken is not None and taken.owner == "b"


def test_an_expired_lease_is_taken_over_and_the_old_owner_is_fenced_out(provisioned):
    leases = lease_table(provisioned)
    leases.acquire(SHARD, "stalled", lease_seconds=-1)  # already expired: a consumer that stopped renewing
    leases.begin_range(SHARD, "stalled", "10", "20", lease_seconds=-1)
    successor = leases.acquire(SHARD, "next", lease_seconds=60)
    assert successor is not None and successor.pending == ("10", "20")  # the range to drain again first
    for write in (lambda: leases.begin_range(SHARD, "stalled", "21", "30", lease_seconds=60),
                  lambda: leases.commit_range(SHARD, "stalled", "20"),
                  lambda: leases.renew(SHARD, "stalled", lease_seconds=60)):
        with pytest.raises(LeaseLost):
            write()
    leases.release(SHARD, "stalled")  # a lost lease is released without harm
    assert leases.get(SHARD).owner == "next"


def test_commit_moves_the_checkpoint_and_clears_the_pending_range(provisioned):
    leases = lease_table(provisioned)
    leases.acquire(SHARD, "a", lease_seconds=60)
    leases.begin_range(SHARD, "a", "1", "9", lease_seconds=60)
    assert leases.get(SHARD).pending == ("1", "9")
    leases.commit_range(SHARD, "a", "9")
    lease = leases.get(SHARD)
    assert (lease.checkpoint, lease.pending, lease.shard_end) == ("9", None, False)
    leases.commit_range(SHARD, "a", "12", shard_end=True)
    assert leases.get(SHARD).shard_end


def test_reset_forgets_the_position_of_another_incarnation_of_the_stream(provisioned):
    leases = lease_table(provisioned)
    leases.acquire(SHARD, "a", lease_seconds=60)
    leases.begin_range(SHARD, "a", "1", "9", lease_seconds=60)
    leases.commit_range(SHARD, "a", "5")
    leases.reset(SHARD, "a", "2026-01-01T00:00:00+00:00")
    lease = leases.get(SHARD)
    assert (lease.checkpoint, lease.pending, lease.stream_created) == (None, None, "2026-01-01T00:00:00+00:00")
