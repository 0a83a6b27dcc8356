"""Policy: how long an entry is fresh, stale and kept, and how entries are built from values.

The one place where a value becomes an `Entry`: loaded values, values that are `set`, a
source's "not found", and a conditional reload that found nothing new.
"""

from __future__ import annotations

from typing import Any

from polycache._config import Duration, duration
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
        keep: Seconds past freshness a backend keeps an entry: the longer of the stale window
            and the stale-if-error window.
    """

    __slots__ = ("keep", "load_timeout", "negative_ttl", "stale_if_error", "stale_ttl", "ttl")

    def __init__(
        self,
        ttl: float,
        stale_ttl: float,
        stale_if_error: float,
        negative_ttl: float,
        load_timeout: float | None,
    ) -> None:
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self.stale_if_error = stale_if_error
        self.negative_ttl = negative_ttl
        self.load_timeout = load_timeout
        self.keep = max(stale_ttl, stale_if_error)

    def __repr__(self) -> str:
        return (
            f"Policy(ttl={self.ttl}, stale_ttl={self.stale_ttl}, "
            f"stale_if_error={self.stale_if_error}, negative_ttl={self.negative_ttl}, "
            f"load_timeout={self.load_timeout})"
        )

    def override(
        self,
        *,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
        stale_if_error: Duration | None = None,
        negative_ttl: Duration | None = None,
    ) -> Policy:
        """This policy with the given durations replaced (validated); self if none is given."""
        if ttl is None and stale_ttl is None and stale_if_error is None and negative_ttl is None:
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
        )

    def entry(self, value: Any, now: float, validator: str | None = None) -> Entry:
        """A fresh entry for `value`, as of `now`."""
        fresh_until = now + self.ttl
        stale_until = fresh_until + self.stale_ttl if self.stale_ttl else fresh_until
        keep = self.keep
        if validator is not None:
            # Kept one more ttl so that an expired entry can be revalidated (S3 If-None-Match)
            # instead of downloaded again.
            keep = max(keep, self.ttl)
        expires_at = fresh_until + keep if keep else fresh_until
        return Entry(value, fresh_until, stale_until, expires_at, validator)

    def loaded(self, value: Any, now: float) -> Entry:
        """The entry for what a loader returned: a plain value, or `Loaded` with a validator."""
        if isinstance(value, Loaded):
            return self.entry(value.value, now, value.validator)
        return self.entry(value, now)

    def negative(self, now: float) -> Entry:
        """The entry that remembers a source's "not found"."""
        until = now + self.negative_ttl
        return Entry(None, until, until, until, None, True)

    def may_stand_in(self, previous: Entry | None, now: float) -> bool:
        """True if `previous` may be served in place of a failed load (stale-if-error)."""
        return (
            previous is not None
            and not previous.negative
            and now <= previous.fresh_until + self.keep
        )
