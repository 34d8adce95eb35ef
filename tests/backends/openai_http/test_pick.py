"""ReplicaPool, alone: which replica serves next (least outstanding, ties spread, ejected
and excluded ones skipped), how failures eject a replica and how a probe brings it back."""

from __future__ import annotations

import time

from backends.openai_http.options import UpstreamOptions
from backends.openai_http.replicas import Replica, ReplicaPool


def pool(n: int = 3, fail_threshold: int = 2, cooldown: float = 60.0) -> ReplicaPool:
    upstreams = tuple(UpstreamOptions(f"http://10.0.0.{i}:8000/v1") for i in range(n))
    return ReplicaPool(upstreams, fail_threshold, cooldown)


def picks(p: ReplicaPool, times: int, exclude: set[Replica] | None = None) -> list[int]:
    chosen = [p.pick(exclude or set()) for _ in range(times)]
    return [p.replicas.index(r) if r is not None else -1 for r in chosen]


def test_least_outstanding_wins_whatever_the_turn() -> None:
    p = pool()
    for replica, outstanding in zip(p.replicas, (2, 0, 1), strict=True):
        replica.outstanding = outstanding
    assert picks(p, 6) == [1] * 6


def test_ties_rotate_over_every_replica() -> None:
    p = pool()
    assert sorted(picks(p, 3)) == [0, 1, 2]
    p.replicas[0].outstanding = p.replicas[1].outstanding = 1
    assert picks(p, 3) == [2, 2, 2]


def test_ejected_and_excluded_replicas_are_skipped() -> None:
    p = pool()
    p.eject(p.replicas[1], "boom")
    assert 1 not in picks(p, 6)
    p.replicas[0].outstanding = 5  # busier, but the only one not excluded or ejected
    assert picks(p, 3, exclude={p.replicas[2]}) == [0, 0, 0]
    assert picks(p, 1, exclude={p.replicas[0], p.replicas[2]}) == [-1]
    p.eject(p.replicas[0], "boom")
    p.eject(p.replicas[2], "boom")
    assert picks(p, 1) == [-1]
    assert not p.available


def test_consecutive_failures_eject_and_a_success_resets_the_count() -> None:
    p = pool(fail_threshold=2)
    replica = p.replicas[0]
    p.failed(replica, "HTTP 500")
    p.succeeded(replica)
    p.failed(replica, "HTTP 500")
    assert replica.state == "healthy"
    p.failed(replica, "timeout")
    assert replica.state == "ejected"
    assert replica.last_error == "timeout" and replica.failures == 3


def test_only_a_probe_after_the_cooldown_brings_a_replica_back() -> None:
    p = pool(cooldown=60.0)
    replica = p.replicas[2]
    p.eject(replica, "refused")
    now = time.monotonic()
    assert p.due_for_probe(now) == []
    next_probe = p.next_probe_at()
    assert next_probe is not None and now + 59 < next_probe <= now + 61
    p.succeeded(replica)  # live traffic never restores an ejected replica
    assert replica.state == "ejected"
    assert p.due_for_probe(now + 61) == [replica]
    p.probe_succeeded(replica)
    assert replica.state == "healthy" and replica.consecutive_failures == 0
    assert p.next_probe_at() is None
    assert 2 in picks(p, 3)


def test_status_shows_no_credentials() -> None:
    p = ReplicaPool((UpstreamOptions("http://user:pw@10.0.0.1:8000/v1", "sk-secret"),), 1, 1)
    assert p.replicas[0].headers == {"authorization": "Bearer sk-secret"}
    status = p.status()
    assert status[0]["url"] == "http://10.0.0.1:8000/v1"
    assert "sk-secret" not in repr(status) and "pw" not in repr(status)
