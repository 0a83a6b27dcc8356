"""The counters a cache keeps, and `Stats`, the snapshot users read."""

from __future__ import annotations

from polycache._contracts import Frozen, set_field

__all__ = ["Counters", "Stats"]


class Stats(Frozen):
    """Counters since the cache was created (a snapshot; read `cache.stats` again to update).

    Attributes:
        hits: Gets answered by a fresh entry (a remembered "not found" included).
        misses: Gets that found no usable entry (then loaded, if the key has a loader).
        stale_hits: Gets answered by a stale entry while it refreshed, or after a failed load.
        loads: Loader calls (one per key, batched calls included).
        load_errors: Loads that failed (whether or not a stale value stood in).
        load_timeouts: Loads cancelled for running past `load_timeout` (also load errors).
        lease_waits: Misses that waited for another process's load of the key (shared
            backends, `lease_wait`).
        backend_errors: Backend operations that failed or timed out.
        backend_skipped: Backend operations not made because the backend's circuit was open.
        breaker: The backend's circuit breaker: `closed`, `open` or `half_open` (always
            `closed` for the memory backend).
        uncached: Loaded values returned to the caller but too large or not serializable to store.
    """

    __slots__ = (
        "backend_errors",
        "backend_skipped",
        "breaker",
        "hits",
        "lease_waits",
        "load_errors",
        "load_timeouts",
        "loads",
        "misses",
        "stale_hits",
        "uncached",
    )
    __match_args__ = (
        "hits",
        "misses",
        "stale_hits",
        "loads",
        "load_errors",
        "load_timeouts",
        "lease_waits",
        "backend_errors",
        "backend_skipped",
        "uncached",
        "breaker",
    )

    hits: int
    misses: int
    stale_hits: int
    loads: int
    load_errors: int
    load_timeouts: int
    lease_waits: int
    backend_errors: int
    backend_skipped: int
    uncached: int
    breaker: str

    def __init__(
        self,
        hits: int = 0,
        misses: int = 0,
        stale_hits: int = 0,
        loads: int = 0,
        load_errors: int = 0,
        load_timeouts: int = 0,
        lease_waits: int = 0,
        backend_errors: int = 0,
        backend_skipped: int = 0,
        uncached: int = 0,
        breaker: str = "closed",
    ) -> None:
        set_field(self, "hits", hits)
        set_field(self, "misses", misses)
        set_field(self, "stale_hits", stale_hits)
        set_field(self, "loads", loads)
        set_field(self, "load_errors", load_errors)
        set_field(self, "load_timeouts", load_timeouts)
        set_field(self, "lease_waits", lease_waits)
        set_field(self, "backend_errors", backend_errors)
        set_field(self, "backend_skipped", backend_skipped)
        set_field(self, "uncached", uncached)
        set_field(self, "breaker", breaker)


class Counters:
    """The mutable counters behind `Stats` (hits are kept on the Cache, for the hit path)."""

    __slots__ = (
        "backend_errors",
        "backend_skipped",
        "lease_waits",
        "load_errors",
        "load_timeouts",
        "loads",
        "misses",
        "stale_hits",
        "uncached",
    )

    def __init__(self) -> None:
        self.misses = self.stale_hits = self.loads = 0
        self.load_errors = self.load_timeouts = self.backend_errors = self.uncached = 0
        self.backend_skipped = self.lease_waits = 0

    def snapshot(self, hits: int, breaker: str = "closed") -> Stats:
        """A `Stats` of these counters, `hits` and the breaker's state."""
        return Stats(
            hits=hits,
            misses=self.misses,
            stale_hits=self.stale_hits,
            loads=self.loads,
            load_errors=self.load_errors,
            load_timeouts=self.load_timeouts,
            lease_waits=self.lease_waits,
            backend_errors=self.backend_errors,
            backend_skipped=self.backend_skipped,
            uncached=self.uncached,
            breaker=breaker,
        )
