"""Policy: how long an entry is fresh, stale and kept, and how entries are built from values.

The one place where a value becomes an `Entry`: loaded values, values that are `set`, a
source's "not found", and a conditional reload that found nothing new.
"""

from __future__ import annotations

import math
from typing import Any

from polycache._config import Duration, duration, fraction
from polycache._contracts import Entry, Loaded

__all__ = ["Policy"]

# A plain slotted class, not a dataclass: building a dataclass costs about a millisecond at
# import, and `import polycache` is on the cold start.


class Policy:
    """The durations that apply to one key (the cache's, or a loader's or a call's own).

    Attributes:
        ttl: Seconds an entry is fresh.
        stale_ttl: Seconds after that it is served while one background refresh runs.
        stale_if_error: Seconds past freshness an old value may stand in for a failed load.
        negative_ttl: Seconds a "not found" is remembered.
        load_timeout: Seconds one load may run, or None for no limit.
        ttl_jitter: The fraction of `ttl` by which each entry's freshness is randomly shortened.
        early_refresh: Whether a loaded entry is refreshed early, in the background, at a
            random moment before it expires that comes sooner the longer its load took
            (probabilistic early expiration, "XFetch").
        keep: Seconds past freshness a backend keeps an entry: the longer of the stale window
            and the stale-if-error window.
    """

    __slots__ = (
        "early_refresh",
        "keep",
        "load_timeout",
        "negative_ttl",
        "stale_if_error",
        "stale_ttl",
        "ttl",
        "ttl_jitter",
    )

    def __init__(
        self,
        ttl: float,
        stale_ttl: float,
        stale_if_error: float,
        negative_ttl: float,
        load_timeout: float | None,
        ttl_jitter: float = 0.0,
        early_refresh: bool = False,
    ) -> None:
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self.stale_if_error = stale_if_error
        self.negative_ttl = negative_ttl
        self.load_timeout = load_timeout
        self.ttl_jitter = ttl_jitter
        self.early_refresh = early_refresh
        self.keep = max(stale_ttl, stale_if_error)

    def __repr__(self) -> str:
        return (
            f"Policy(ttl={self.ttl}, stale_ttl={self.stale_ttl}, "
            f"stale_if_error={self.stale_if_error}, negative_ttl={self.negative_ttl}, "
            f"load_timeout={self.load_timeout}, ttl_jitter={self.ttl_jitter}, "
            f"early_refresh={self.early_refresh})"
        )

    def override(
        self,
        *,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
        stale_if_error: Duration | None = None,
        negative_ttl: Duration | None = None,
        ttl_jitter: float | None = None,
    ) -> Policy:
        """This policy with the given values replaced (validated); self if none is given."""
        if (
            ttl is None
            and stale_ttl is None
            and stale_if_error is None
            and negative_ttl is None
            and ttl_jitter is None
        ):
            return self
        return Policy(
            ttl=self.ttl if ttl is None else duration(ttl, name="ttl"),
            stale_ttl=self.stale_ttl
            if stale_ttl is None
            else duration(stale_ttl, name="stale_ttl"),
            stale_if_error=self.stale_if_error
            if stale_if_error is None
            else duration(stale_if_error, name="stale_if_error"),
            negative_ttl=self.negative_ttl
            if negative_ttl is None
            else duration(negative_ttl, name="negative_ttl"),
            load_timeout=self.load_timeout,
            ttl_jitter=self.ttl_jitter
            if ttl_jitter is None
            else fraction(ttl_jitter, name="ttl_jitter"),
            early_refresh=self.early_refresh,
        )

    def entry(
        self, value: Any, now: float, validator: str | None = None, load_seconds: float = 0.0
    ) -> Entry:
        """A fresh entry for `value`, as of `now`.

        Args:
            value: The value.
            now: Epoch seconds.
            validator: The source's version tag, if any.
            load_seconds: How long the load took, for early refresh.
        """
        ttl = self.ttl
        if self.ttl_jitter:
            import random  # only with jitter or early refresh: it costs 1 ms to import

            ttl -= ttl * self.ttl_jitter * random.random()  # noqa: S311 - spreading, not secrecy
        fresh_until = now + ttl
        stale_until = fresh_until + self.stale_ttl if self.stale_ttl else fresh_until
        keep = self.keep
        if validator is not None:
            # Kept one more ttl so that an expired entry can be revalidated (S3 If-None-Match)
            # instead of downloaded again.
            keep = max(keep, self.ttl)
        expires_at = fresh_until + keep if keep else fresh_until
        if self.early_refresh and load_seconds > 0:
            # XFetch, drawn once per load: the entry turns "stale" (served at once while one
            # background refresh runs) at a random moment before it expires, sooner for loads
            # that take longer. At least one load time early, so that a refresh started then
            # is done before the true expiry: until then, nobody waits.
            import random

            early = load_seconds * (1.0 - math.log(1.0 - random.random()))  # noqa: S311
            fresh_until = max(now, fresh_until - early)
        return Entry(value, fresh_until, stale_until, expires_at, validator)

    def loaded(self, value: Any, now: float, load_seconds: float = 0.0) -> Entry:
        """The entry for what a loader returned: a plain value, or `Loaded` with a validator."""
        if isinstance(value, Loaded):
            return self.entry(value.value, now, value.validator, load_seconds)
        return self.entry(value, now, None, load_seconds)

    def negative(self, now: float) -> Entry:
        """The entry that remembers a source's "not found"."""
        until = now + self.negative_ttl
        return Entry(None, until, until, until, None, True)

    def too_old(self, entry: Entry, now: float, max_age: float) -> bool:
        """True if `entry` was written `max_age` seconds ago or more.

        The write time is taken as `fresh_until - ttl` (with jitter or early refresh, an entry
        may count as a little older than it is: it reloads a little sooner, never later).
        """
        return now - (entry.fresh_until - self.ttl) >= max_age or max_age == 0

    def may_stand_in(self, previous: Entry | None, now: float) -> bool:
        """True if `previous` may be served in place of a failed load (stale-if-error)."""
        return (
            previous is not None
            and not previous.negative
            and now <= previous.fresh_until + self.keep
        )
