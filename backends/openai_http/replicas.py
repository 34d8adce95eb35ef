"""The upstream replicas of one model, their health, and which one serves next.

A replica is `healthy` until `fail_threshold` requests in a row fail on it; then it is
`ejected` for `cooldown` seconds, after which only a probe (never live traffic) can
bring it back. Picking is least-outstanding-requests among healthy replicas, with a
rotating start so that ties (an idle pool) still spread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from backends.openai_http.options import UpstreamOptions

log = structlog.get_logger("backends.openai_http")
State = Literal["healthy", "ejected"]


@dataclass(eq=False)
class Replica:
    upstream: UpstreamOptions
    state: State = "healthy"
    outstanding: int = 0
    consecutive_failures: int = 0
    ejected_until: float = 0.0  # monotonic time when a probe may bring it back
    requests: int = 0
    failures: int = 0
    last_error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # per-upstream auth

    @property
    def url(self) -> str:
        return self.upstream.url

    def status(self, now: float) -> dict[str, Any]:
        return {
            "url": self.upstream.display,
            "state": self.state,
            "outstanding": self.outstanding,
            "requests": self.requests,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "probe_in_s": round(max(0.0, self.ejected_until - now), 1)
            if self.state == "ejected"
            else None,
            "last_error": self.last_error,
        }


class ReplicaPool:
    def __init__(
        self, upstreams: tuple[UpstreamOptions, ...], fail_threshold: int, cooldown: float
    ) -> None:
        self.replicas = [Replica(u) for u in upstreams]
        for r in self.replicas:
            if r.upstream.api_key:
                r.headers["authorization"] = f"Bearer {r.upstream.api_key}"
        self.fail_threshold = fail_threshold
        self.cooldown = cooldown
        self._turn = 0

    def pick(self, exclude: set[Replica]) -> Replica | None:
        """The healthy replica with the fewest requests in flight, not in `exclude`."""
        n = len(self.replicas)
        best: Replica | None = None
        start = self._turn
        self._turn = (start + 1) % n
        for i in range(n):
            r = self.replicas[(start + i) % n]
            if r.state != "healthy" or r in exclude:
                continue
            if best is None or r.outstanding < best.outstanding:
                best = r
        return best

    @property
    def available(self) -> bool:
        return any(r.state == "healthy" for r in self.replicas)

    def succeeded(self, replica: Replica) -> None:
        replica.consecutive_failures = 0

    def failed(self, replica: Replica, error: str) -> None:
        """A connection error, timeout or 5xx: counts towards ejection."""
        replica.failures += 1
        replica.consecutive_failures += 1
        replica.last_error = error
        if replica.state == "healthy" and replica.consecutive_failures >= self.fail_threshold:
            self.eject(replica, error)

    def eject(self, replica: Replica, error: str) -> None:
        was = replica.state
        replica.state = "ejected"
        replica.last_error = error
        replica.ejected_until = time.monotonic() + self.cooldown
        if was != "ejected":
            log.warning("replica ejected", upstream=replica.upstream.display, error=error,
                        cooldown_s=self.cooldown)

    def probe_succeeded(self, replica: Replica) -> None:
        if replica.state == "ejected":
            log.info("replica restored", upstream=replica.upstream.display)
        replica.state = "healthy"
        replica.consecutive_failures = 0

    def due_for_probe(self, now: float) -> list[Replica]:
        return [r for r in self.replicas if r.state == "ejected" and r.ejected_until <= now]

    def next_probe_at(self) -> float | None:
        times = [r.ejected_until for r in self.replicas if r.state == "ejected"]
        return min(times) if times else None

    def status(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [r.status(now) for r in self.replicas]
