"""The in-process backend: a bounded LRU of entries, no timers, no tasks."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any, Final

from polycache._contracts import Entry
from polycache._errors import ConfigurationError
from polycache._registry import parse_options, positive_int, split_url

__all__ = ["NEGATIVE", "MemoryBackend", "Record", "entry_from_record", "record_from_entry"]

DEFAULT_MAX_ENTRIES = 10_000


class _Negative:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<not found>"


NEGATIVE: Final = _Negative()
"""The value of a record that remembers a source's "not found"."""

Record = tuple[Any, ...]
"""`(value, fresh_until, stale_until, expires_at[, validator])`: an entry as a plain tuple.

A tuple costs less memory than an `Entry` and far less time to build, which is what the
Cache's hit and set paths are made of.
"""


def record_from_entry(entry: Entry) -> Record:
    """The record form of `entry`."""
    value = NEGATIVE if entry.negative else entry.value
    if entry.validator is None:
        return (value, entry.fresh_until, entry.stale_until, entry.expires_at)
    return (value, entry.fresh_until, entry.stale_until, entry.expires_at, entry.validator)


def entry_from_record(record: Record) -> Entry:
    """The `Entry` form of `record`."""
    value = record[0]
    negative = value is NEGATIVE
    return Entry(
        None if negative else value,
        record[1],
        record[2],
        record[3],
        record[4] if len(record) > 4 else None,
        negative,
    )


class MemoryBackend:
    """Keeps entries in this process, as Python objects (nothing is serialized).

    Memory is bounded by `max_entries`: when full, the least recently used entries are dropped
    first (the oldest 1% at once, so that eviction stays O(1) per entry on average). Expiry is
    checked when an entry is read; there is no timer or janitor task, so the backend works from
    any event loop, and from none.

    Args:
        max_entries: The most entries kept at once.
        clock: Returns the current epoch time in seconds; injectable for tests.
    """

    stores_objects = True
    max_item_bytes = None

    __slots__ = ("_clock", "max_entries", "records")

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, *, clock: Callable[[], float] = time.time
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries <= 0:
            raise ConfigurationError(
                f"max_entries must be an int greater than 0, got {max_entries!r}"
            )
        self.max_entries = max_entries
        self._clock = clock
        # A plain dict keeps insertion order: re-inserting a key on every hit makes its order
        # the recency order, at a fraction of the memory of an OrderedDict or cachetools' LRU.
        # The Cache's hit path reads this dict directly.
        self.records: dict[str, Record] = {}

    @classmethod
    def from_url(cls, url: str, *, environ: Mapping[str, str] | None = None) -> MemoryBackend:
        """Build from `memory://[?max_entries=N]` (the memory backend reads no environment)."""
        if url == "memory://":
            return cls()
        parts = split_url(url)
        if parts.netloc or parts.path not in ("", "/"):
            raise ConfigurationError(
                f"memory backend URL {url!r} takes no host or path: expected "
                "'memory://' or 'memory://?max_entries=10000'"
            )
        options = parse_options(url, {"max_entries": positive_int})
        max_entries = options.get("max_entries", DEFAULT_MAX_ENTRIES)
        assert isinstance(max_entries, int)
        return cls(max_entries)

    def __repr__(self) -> str:
        return f"MemoryBackend(max_entries={self.max_entries}, entries={len(self.records)})"

    def __len__(self) -> int:
        return len(self.records)

    def peek(self, key: str) -> Record | None:
        """Return the record under `key` and mark it recently used, without an expiry check."""
        records = self.records
        record = records.pop(key, None)
        if record is not None:
            records[key] = record
        return record

    def put(self, key: str, record: Record) -> None:
        """Store `record`, evicting the least recently used entries if full."""
        records = self.records
        records.pop(key, None)
        records[key] = record
        if len(records) > self.max_entries:
            self.evict()

    def evict(self) -> None:
        """Drop least recently used records until at most `max_entries` remain."""
        records = self.records
        excess = len(records) - self.max_entries
        if excess <= 0:
            return
        # Evicting from the front of a dict leaves holes that every later eviction would scan
        # past; dropping the oldest 1% at once pays that scan once per batch.
        for oldest in list(islice(records, max(excess, self.max_entries // 100))):
            del records[oldest]

    def discard(self, key: str) -> None:
        """Forget `key`."""
        self.records.pop(key, None)

    def clear(self) -> None:
        """Forget every entry."""
        self.records.clear()

    async def get(self, key: str) -> Entry | None:
        """Return the entry under `key`, or None if absent or past `expires_at`."""
        record = self.peek(key)
        if record is None:
            return None
        if record[3] <= self._clock():
            del self.records[key]
            return None
        return entry_from_record(record)

    async def set(self, key: str, entry: Entry) -> None:
        """Store `entry` under `key`."""
        self.put(key, record_from_entry(entry))

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        self.discard(key)

    async def aclose(self) -> None:
        """Nothing to release; entries are kept, so the backend stays usable."""
