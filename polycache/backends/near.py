"""A near-cache: a small in-process layer in front of a remote backend, so hot keys cost no trip.

Any remote backend URL takes it: `momento://sessions?local_max_entries=1000&local_ttl=5`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import Final

from polycache._contracts import Backend, BatchBackend, ClearableBackend, Entry, LeaseBackend
from polycache._errors import ConfigurationError

__all__ = ["DEFAULT_LOCAL_MAX_ENTRIES", "DEFAULT_LOCAL_TTL", "NearCacheBackend"]

DEFAULT_LOCAL_MAX_ENTRIES: Final = 1000
DEFAULT_LOCAL_TTL: Final = 5.0


class NearCacheBackend:
    """Keeps recently read or written entries in process, in front of a remote backend.

    An entry is answered locally for at most `local_ttl` seconds and never past its own
    `fresh_until` (nor `stale_until` or `expires_at`): once it is no longer fresh, the remote
    backend is asked again, so a refresh that another process stored there is seen. Writes and
    deletes go to the remote backend and update the local layer. Another process's write is seen
    here within `local_ttl` at the latest.

    Bulk operations answer what they can locally and pass the rest to the remote backend in one
    bulk call when it has them (`BatchBackend`), else concurrently. `clear` empties the local
    layer and clears the remote backend, if that can clear (`ClearableBackend`).

    Args:
        remote: The backend in front of which this layer sits.
        local_max_entries: The most entries held locally (least recently used dropped first).
        local_ttl: The most seconds an entry is answered locally without asking `remote`.
        clock: Returns the epoch time in seconds; injectable for tests.

    Raises:
        ConfigurationError: A bad size or duration, or a `remote` that is already in process.
    """

    __slots__ = (
        "_batch",
        "_clearable",
        "_clock",
        "_local",
        "_remote",
        "_writes",
        "local_max_entries",
        "local_ttl",
    )

    def __new__(cls, remote: Backend, *args: object, **options: object) -> NearCacheBackend:
        """A near-cache that is a `LeaseBackend` (passing `add` through) if `remote` is one."""
        # A runtime-checkable Protocol sees methods, not what they would do, so the class is
        # chosen here: the Cache checks isinstance(backend, LeaseBackend) once.
        chosen = _LeasingNearCache if isinstance(remote, LeaseBackend) else cls
        return object.__new__(chosen if issubclass(chosen, cls) else cls)

    def __init__(
        self,
        remote: Backend,
        *,
        local_max_entries: int = DEFAULT_LOCAL_MAX_ENTRIES,
        local_ttl: float = DEFAULT_LOCAL_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if remote.stores_objects:
            raise ConfigurationError(
                f"a near-cache is for remote backends; {type(remote).__name__} already keeps "
                "entries in process (drop local_max_entries and local_ttl)"
            )
        if (
            isinstance(local_ttl, bool)
            or not isinstance(local_ttl, int | float)
            or not 0 < local_ttl < float("inf")
        ):
            raise ConfigurationError(
                f"local_ttl must be a positive number of seconds, got {local_ttl!r}"
            )
        if (
            isinstance(local_max_entries, bool)
            or not isinstance(local_max_entries, int)
            or local_max_entries <= 0
        ):
            raise ConfigurationError(
                f"local_max_entries must be an int greater than 0, got {local_max_entries!r}"
            )
        self._remote = remote
        # The remote's optional abilities, looked up once: a Protocol check per call is slow.
        self._batch = remote if isinstance(remote, BatchBackend) else None
        self._clearable = remote if isinstance(remote, ClearableBackend) else None
        self.local_max_entries = local_max_entries
        # key -> (the remote entry, until when it may be answered from here); insertion order
        # is recency order, as in the memory backend.
        self._local: dict[str, tuple[Entry, float]] = {}
        self._clock = clock
        self.local_ttl = float(local_ttl)
        # Counts local writes and deletes: a remote read that overlapped one may have fetched
        # the value it replaced, so its result is returned but not held.
        self._writes = 0

    @classmethod
    def from_options(cls, remote: Backend, options: Mapping[str, object]) -> NearCacheBackend:
        """Wrap `remote` with the `local_max_entries` and `local_ttl` of a backend URL.

        Raises:
            ConfigurationError: An option of the wrong type or out of range.
        """
        local_max_entries = options.get("local_max_entries", DEFAULT_LOCAL_MAX_ENTRIES)
        local_ttl = options.get("local_ttl", DEFAULT_LOCAL_TTL)
        if not isinstance(local_max_entries, int):
            raise ConfigurationError(
                f"local_max_entries must be an int greater than 0, got {local_max_entries!r}"
            )
        if not isinstance(local_ttl, int | float):
            raise ConfigurationError(
                f"local_ttl must be a positive number of seconds, got {local_ttl!r}"
            )
        return cls(remote, local_max_entries=local_max_entries, local_ttl=local_ttl)

    def __repr__(self) -> str:
        return (
            f"NearCacheBackend({self._remote!r}, local_max_entries={self.local_max_entries}, "
            f"local_ttl={self.local_ttl})"
        )

    @property
    def stores_objects(self) -> bool:
        """False: values are serialized for the remote backend, and held locally as such."""
        return False

    @property
    def max_item_bytes(self) -> int | None:
        """The remote backend's limit."""
        return self._remote.max_item_bytes

    @property
    def remote(self) -> Backend:
        """The backend behind the local layer."""
        return self._remote

    def __len__(self) -> int:
        return len(self._local)

    def peek(self, key: str) -> Entry | None:
        """Return the locally held entry for `key` if it may still be answered here, else None.

        Synchronous and free of I/O, for a caller's hit path; it never asks the remote backend.
        """
        local = self._local
        held = local.pop(key, None)
        if held is not None and self._clock() < held[1]:
            local[key] = held
            return held[0]
        return None

    async def get(self, key: str) -> Entry | None:
        """Answer from the local layer while allowed, else from the remote backend."""
        held = self.peek(key)
        if held is not None:
            return held
        writes = self._writes
        entry_or_none = await self._remote.get(key)
        if entry_or_none is not None and writes == self._writes:
            self._hold(key, entry_or_none)
        return entry_or_none

    async def set(self, key: str, entry: Entry) -> None:
        """Store in the remote backend, then hold locally."""
        # Dropped first: if the remote write fails or is cancelled, the old value must not be
        # answered here as if the write had not been attempted.
        self._local.pop(key, None)
        self._writes += 1
        await self._remote.set(key, entry)
        self._hold(key, entry)

    async def delete(self, key: str) -> None:
        """Forget locally and in the remote backend."""
        self._local.pop(key, None)
        self._writes += 1
        await self._remote.delete(key)

    async def get_many(self, keys: Sequence[str]) -> Sequence[Entry | None]:
        """Answer each key locally while allowed; ask the remote backend for the rest at once."""
        results: list[Entry | None] = [self.peek(key) for key in keys]
        missing = [index for index, held in enumerate(results) if held is None]
        if not missing:
            return results
        writes = self._writes
        wanted = [keys[index] for index in missing]
        batch = self._batch
        fetched = (
            await batch.get_many(wanted)
            if batch is not None
            else await asyncio.gather(*(self._remote.get(key) for key in wanted))
        )
        hold = writes == self._writes
        for index, key, entry_or_none in zip(missing, wanted, fetched, strict=True):
            results[index] = entry_or_none
            if entry_or_none is not None and hold:
                self._hold(key, entry_or_none)
        return results

    async def set_many(self, entries: Mapping[str, Entry]) -> None:
        """Store every entry in the remote backend, then hold them locally."""
        local = self._local
        for key in entries:
            local.pop(key, None)
        self._writes += 1
        batch = self._batch
        if batch is not None:
            await batch.set_many(entries)
        else:
            await asyncio.gather(*(self._remote.set(key, entry) for key, entry in entries.items()))
        for key, entry in entries.items():
            self._hold(key, entry)

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Forget every key locally and in the remote backend."""
        local = self._local
        for key in keys:
            local.pop(key, None)
        self._writes += 1
        batch = self._batch
        if batch is not None:
            await batch.delete_many(keys)
        else:
            await asyncio.gather(*(self._remote.delete(key) for key in keys))

    async def clear(self) -> None:
        """Forget every entry, locally and (polycache's own) in the remote backend.

        Raises:
            ConfigurationError: The remote backend cannot clear.
        """
        clearable = self._clearable
        if clearable is None:
            raise ConfigurationError(
                f"{type(self._remote).__name__} cannot clear (it is not a ClearableBackend)"
            )
        self._local.clear()
        self._writes += 1
        await clearable.clear()

    async def aclose(self) -> None:
        """Release the remote backend's connections; the local layer is kept."""
        await self._remote.aclose()

    def clear_local(self) -> None:
        """Forget every locally held entry (the remote backend keeps them)."""
        self._local.clear()

    def _hold(self, key: str, entry: Entry) -> None:
        now = self._clock()
        until = min(entry.fresh_until, entry.stale_until, entry.expires_at, now + self.local_ttl)
        local = self._local
        local.pop(key, None)
        if until <= now:
            return
        local[key] = (entry, until)
        if len(local) > self.local_max_entries:
            for oldest in list(islice(local, len(local) - self.local_max_entries)):
                del local[oldest]


class _LeasingNearCache(NearCacheBackend):
    """A near-cache whose remote backend holds leases; `NearCacheBackend(remote)` builds it."""

    __slots__ = ()

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Add `key` in the remote backend (`LeaseBackend.add`); nothing is held locally."""
        self._local.pop(key, None)
        remote: LeaseBackend = self._remote  # type: ignore[assignment] # chosen in __new__
        return await remote.add(key, value, ttl)
