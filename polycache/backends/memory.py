"""The in-process backend: a bounded LRU of `Entry` objects, no timers, no tasks."""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import islice

from polycache._contracts import Entry
from polycache._errors import ConfigurationError
from polycache._registry import parse_options, positive_int, split_url

__all__ = ["MemoryBackend"]

DEFAULT_MAX_ENTRIES = 10_000


class MemoryBackend:
    """Keeps entries in this process, as Python objects (nothing is serialized).

    Memory is bounded by `max_entries`: the least recently used entry is dropped first.
    Expiry is checked when an entry is read; there is no timer or janitor task, so the backend
    works from any event loop, and from none.

    Args:
        max_entries: The most entries kept at once.
        clock: Returns the current epoch time in seconds; injectable for tests.
    """

    stores_objects = True
    max_item_bytes = None

    __slots__ = ("_clock", "_entries", "max_entries")

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
        self._entries: dict[str, Entry] = {}

    @classmethod
    def from_url(cls, url: str) -> MemoryBackend:
        """Build from `memory://[?max_entries=N]`."""
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
        return f"MemoryBackend(max_entries={self.max_entries}, entries={len(self._entries)})"

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: str) -> Entry | None:
        """Return the entry under `key` and mark it recently used, without an expiry check.

        The `Cache` uses this synchronous form on its hit path and checks expiry itself.
        """
        entries = self._entries
        entry = entries.pop(key, None)
        if entry is not None:
            entries[key] = entry
        return entry

    def put(self, key: str, entry: Entry) -> None:
        """Store `entry` synchronously, evicting the least recently used entries if full."""
        entries = self._entries
        entries.pop(key, None)
        entries[key] = entry
        if len(entries) > self.max_entries:
            # Evicting from the front of a dict leaves holes that every later eviction would
            # scan past; dropping the oldest 1% at once pays that scan once per batch.
            excess = len(entries) - self.max_entries
            batch = max(excess, self.max_entries // 100)
            for oldest in list(islice(entries, batch)):
                del entries[oldest]

    def discard(self, key: str) -> None:
        """Forget `key` synchronously."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()

    async def get(self, key: str) -> Entry | None:
        """Return the entry under `key`, or None if absent or past `expires_at`."""
        entry = self.peek(key)
        if entry is not None and entry.expires_at <= self._clock():
            del self._entries[key]
            return None
        return entry

    async def set(self, key: str, entry: Entry) -> None:
        """Store `entry` under `key`."""
        self.put(key, entry)

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        self.discard(key)

    async def aclose(self) -> None:
        """Nothing to release; entries are kept, so the backend stays usable."""
