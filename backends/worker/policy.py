"""Supervision options (`[models.worker]`) and the restart policy: exponential backoff
from 1 s (by default) doubling to a cap, reset after a stable period, and `crashed` after too many
crashes in a window (then one more attempt after a long cool-down)."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.errors import ConfigError

ISOLATIONS = ("none", "process")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    restart_backoff_initial: float = 1.0  # seconds before the first restart
    restart_backoff_max: float = 60.0  # seconds: the cap of the doubling backoff
    stable_after: float = 60.0  # seconds up before the backoff starts again at 1 s
    crash_limit: int = 5  # this many crashes within crash_window: `crashed`
    crash_window: float = 300.0
    crashed_retry: float = 300.0  # seconds in `crashed` before one more attempt
    heartbeat_timeout: float = 10.0  # no heartbeat for this long: the worker is killed
    load_timeout: float = 600.0  # seconds a (re)load may take

    @property
    def heartbeat_interval(self) -> float:
        return max(0.05, min(1.0, self.heartbeat_timeout / 5))

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> WorkerOptions:
        known = {f: getattr(cls(), f) for f in cls.__dataclass_fields__}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in known:
                raise ConfigError(f"unknown key (expected {', '.join(sorted(known))})", key)
            if key == "crash_limit":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError("must be a whole number of at least 1", key)
            elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError("must be a positive number of seconds", key)
            values[key] = value
        return cls(**values)


@dataclass(slots=True)
class RestartPolicy:
    options: WorkerOptions
    crashes: collections.deque[float] = field(default_factory=collections.deque)
    streak: int = 0  # crashes since the worker was last stable

    def crashed(self, now: float, up_since: float | None) -> tuple[bool, float]:
        """Record a crash at `now` (the worker had been up since `up_since`, None if it
        never loaded); answer (gave up, seconds until the next attempt)."""
        opts = self.options
        if up_since is not None and now - up_since >= opts.stable_after:
            self.streak = 0
        self.streak += 1
        self.crashes.append(now)
        while self.crashes and now - self.crashes[0] > opts.crash_window:
            self.crashes.popleft()
        if len(self.crashes) >= opts.crash_limit:
            self.crashes.clear()
            return True, opts.crashed_retry
        delay = opts.restart_backoff_initial * 2.0 ** (self.streak - 1)
        return False, min(opts.restart_backoff_max, delay)
