"""The key/value store of the extension: bounded by entries and by bytes, least recently used first.

A Lambda execution environment has little memory, shared by the function and its extensions,
so a count of entries alone is no bound: the store also counts the bytes it holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from polycache._contracts import Entry

__all__ = ["Store"]

# What one entry costs besides its key and value: the Entry, its floats, the dict slot.
_ENTRY_OVERHEAD: Final = 200


def _cost(key: str, entry: Entry) -> int:
    # A Content-Type is at most 255 characters and usually a shared constant: in the overhead.
    validator = len(entry.validator) if entry.validator else 0
    return len(key) + len(entry.value) + validator + _ENTRY_OVERHEAD


class Store:
    """Entries whose values are bytes, each with its Content-Type; expiry is checked on read.

    Args:
        max_entries: The most entries kept.
        max_bytes: The most bytes kept (keys, values and per-entry overhead).
        clock: Epoch seconds; injectable for tests.
    """

    __slots__ = ("_clock", "_entries", "_size", "max_bytes", "max_entries")

    def __init__(
        self, max_entries: int, max_bytes: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        # A dict keeps insertion order: re-inserting on every hit makes it the recency order.
        self._entries: dict[str, tuple[Entry, str, int]] = {}
        self._size = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """The bytes held now, as counted against `max_bytes`."""
        return self._size

    def get(self, key: str) -> tuple[Entry, str] | None:
        """The entry under `key` and its Content-Type, or None if absent or past `expires_at`."""
        held = self._entries.pop(key, None)
        if held is None:
            return None
        entry, content_type, cost = held
        if entry.expires_at <= self._clock():
            self._size -= cost
            return None
        self._entries[key] = held
        return entry, content_type

    def put(self, key: str, entry: Entry, content_type: str = "application/octet-stream") -> None:
        """Store `entry`, dropping the least recently used entries to stay within bounds."""
        self.delete(key)
        cost = _cost(key, entry)
        self._entries[key] = (entry, content_type, cost)
        self._size += cost
        entries = self._entries
        while len(entries) > self.max_entries or self._size > self.max_bytes:
            oldest = next(iter(entries))
            self._size -= entries.pop(oldest)[2]

    def add(self, key: str, entry: Entry, content_type: str = "application/octet-stream") -> bool:
        """Store `entry` only if `key` holds no live entry; True if it was stored."""
        now = self._clock()
        held = self._entries.get(key)
        if held is not None and held[0].expires_at > now:
            return False
        if entry.expires_at > now:
            self.put(key, entry, content_type)
        else:
            self.delete(key)  # stored and gone at once: only the expired entry is dropped
        return True

    def delete(self, key: str) -> None:
        """Forget `key`."""
        held = self._entries.pop(key, None)
        if held is not None:
            self._size -= held[2]

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
        self._size = 0
