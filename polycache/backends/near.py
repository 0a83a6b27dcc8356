"""A near-cache: a small in-process layer in front of a remote backend, so hot keys cost no trip.

Any remote backend URL takes it: `momento://sessions?local_max_entries=1000&local_ttl=5`. When
the remote backend can push (`PushBackend`: Momento Topics), near-caches in every process that
shares it tell each other which keys they replaced (see `docs/fleet.md`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Final

from polycache._contracts import (
    Backend,
    BatchBackend,
    ClearableBackend,
    Entry,
    LeaseBackend,
    PushBackend,
)
from polycache._errors import ConfigurationError
from polycache.backends._invalidation import DISCONNECTED, InvalidationChannel

logger = logging.getLogger("polycache")

if TYPE_CHECKING:
    from polycache._observe import Observers

__all__ = ["DEFAULT_LOCAL_MAX_ENTRIES", "DEFAULT_LOCAL_TTL", "NearCacheBackend"]

DEFAULT_LOCAL_MAX_ENTRIES: Final = 1000
DEFAULT_LOCAL_TTL: Final = 5.0


class NearCacheBackend:
    """Keeps recently read or written entries in process, in front of a remote backend.

    An entry is never answered locally past its own `fresh_until` (nor `stale_until` or
    `expires_at`): once it is no longer fresh, the remote backend is asked again, so a refresh
    that another process stored there is seen. Writes and deletes go to the remote backend and
    update the local layer.

    How long before that a copy may be answered here depends on whether other processes can
    tell this one about their writes:

    - When the remote backend can push (`PushBackend`) and the subscription is live, every
      write (`set`, `delete`, their bulk forms, `clear`) is announced to the other processes
      once it was attempted, in the background; a process that hears of a key drops its copy.
      A copy read or written while subscribed is then answered until its own freshness ends.
    - Without a channel, while it is down, and for copies held from before it last dropped
      (a reconnect, a new event loop), a copy is answered for at most `local_ttl` seconds
      after it was read or written here: another process's write is seen within `local_ttl`.

    Bulk operations answer what they can locally and pass the rest to the remote backend in one
    bulk call when it has them (`BatchBackend`), else concurrently. `clear` empties the local
    layer and clears the remote backend, if that can clear (`ClearableBackend`).

    Args:
        remote: The backend in front of which this layer sits.
        local_max_entries: The most entries held locally (least recently used dropped first).
        local_ttl: The most seconds an entry is answered locally without asking `remote`, unless
            a live push channel vouches for it (see above).
        invalidation: Use the remote backend's push channel when it has one.
        clock: Returns the epoch time in seconds; injectable for tests.

    Attributes:
        observers: Told of the keys other processes invalidated (reason `remote`, `("*",)` for
            a clear); None: nobody is told.

    Raises:
        ConfigurationError: A bad size or duration, or a `remote` that is already in process.
    """

    __slots__ = (
        "_batch",
        "_catching_up",
        "_channel",
        "_clearable",
        "_clock",
        "_local",
        "_push",
        "_remote",
        "_session",
        "_writes",
        "local_max_entries",
        "local_ttl",
        "observers",
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
        invalidation: bool = True,
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
        # key -> (the remote entry, until when it may be answered while its session lasts,
        # until when it may be answered anyway, the channel session it was read or written in);
        # insertion order is recency order, as in the memory backend.
        self._local: dict[str, tuple[Entry, float, float, int]] = {}
        self._clock = clock
        self.local_ttl = float(local_ttl)
        # Counts local writes and deletes: a remote read that overlapped one may have fetched
        # the value it replaced, so its result is returned but not held.
        self._writes = 0
        self.observers: Observers | None = None
        # The channel's live session (DISCONNECTED without one), copied here by its callback:
        # the hit path compares it with an entry's without a call.
        self._session = DISCONNECTED
        self._channel: InvalidationChannel | None = None
        # After another process's clear: the remote backend catching up with it (re-reading
        # its generation), which remote reads wait for.
        self._catching_up: asyncio.Task[None] | None = None
        self._push: PushBackend | None = remote if isinstance(remote, PushBackend) else None
        if invalidation and self._push is not None:
            self._channel = InvalidationChannel(
                self._push.push_transport(),
                invalidate=self._invalidated,
                on_session=self._use_session,
            )
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass  # no loop yet: the first remote operation of each loop subscribes
            else:
                self._listening(loop)

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

    @property
    def channel(self) -> InvalidationChannel | None:
        """The push channel to the other processes, or None if the remote backend has none."""
        return self._channel

    def __len__(self) -> int:
        return len(self._local)

    def peek(self, key: str) -> Entry | None:
        """Return the locally held entry for `key` if it may still be answered here, else None.

        Synchronous and free of I/O, for a caller's hit path; it never asks the remote backend.
        """
        local = self._local
        held = local.pop(key, None)
        if held is not None:
            now = self._clock()
            if now < held[2] or (now < held[1] and held[3] == self._session):
                local[key] = held
                return held[0]
        return None

    async def get(self, key: str) -> Entry | None:
        """Answer from the local layer while allowed, else from the remote backend."""
        held = self.peek(key)
        if held is not None:
            return held
        if self._channel is not None:
            await self._listen()
        writes, session = self._writes, self._session
        entry_or_none = await self._remote.get(key)
        if entry_or_none is not None and writes == self._writes:
            self._hold(key, entry_or_none, session)
        return entry_or_none

    async def set(self, key: str, entry: Entry) -> None:
        """Store in the remote backend, then hold locally; announce the key to other processes."""
        # Dropped first: if the remote write fails or is cancelled, the old value must not be
        # answered here as if the write had not been attempted.
        self._local.pop(key, None)
        self._writes += 1
        channel = self._channel
        if channel is not None:
            await self._listen()
        session = self._session
        try:
            await self._remote.set(key, entry)
        finally:
            # Also after a failure or a timeout: the write may have landed all the same.
            if channel is not None:
                channel.publish((key,))
        self._hold(key, entry, session)

    async def delete(self, key: str) -> None:
        """Forget locally and in the remote backend; announce the key to other processes."""
        self._local.pop(key, None)
        self._writes += 1
        channel = self._channel
        if channel is not None:
            await self._listen()
        try:
            await self._remote.delete(key)
        finally:
            if channel is not None:
                channel.publish((key,))

    async def get_many(self, keys: Sequence[str]) -> Sequence[Entry | None]:
        """Answer each key locally while allowed; ask the remote backend for the rest at once."""
        results: list[Entry | None] = [self.peek(key) for key in keys]
        missing = [index for index, held in enumerate(results) if held is None]
        if not missing:
            return results
        if self._channel is not None:
            await self._listen()
        writes, session = self._writes, self._session
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
                self._hold(key, entry_or_none, session)
        return results

    async def set_many(self, entries: Mapping[str, Entry]) -> None:
        """Store every entry in the remote backend, then hold them locally."""
        local = self._local
        for key in entries:
            local.pop(key, None)
        self._writes += 1
        channel = self._channel
        if channel is not None:
            await self._listen()
        session = self._session
        batch = self._batch
        try:
            if batch is not None:
                await batch.set_many(entries)
            else:
                await asyncio.gather(
                    *(self._remote.set(key, entry) for key, entry in entries.items())
                )
        finally:
            if channel is not None:
                channel.publish(entries)
        for key, entry in entries.items():
            self._hold(key, entry, session)

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Forget every key locally and in the remote backend."""
        local = self._local
        for key in keys:
            local.pop(key, None)
        self._writes += 1
        channel = self._channel
        if channel is not None:
            await self._listen()
        batch = self._batch
        try:
            if batch is not None:
                await batch.delete_many(keys)
            else:
                await asyncio.gather(*(self._remote.delete(key) for key in keys))
        finally:
            if channel is not None:
                channel.publish(keys)

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
        channel = self._channel
        if channel is not None:
            await self._listen()
        try:
            await clearable.clear()
        finally:
            if channel is not None:
                channel.publish_all()

    async def aclose(self) -> None:
        """Send pending announcements, stop listening, release the remote's connections.

        The local layer is kept; the next operation subscribes and connects again.
        """
        if self._channel is not None:
            await self._channel.aclose()
        await self._remote.aclose()

    def clear_local(self) -> None:
        """Forget every locally held entry (the remote backend keeps them)."""
        self._local.clear()

    def _hold(self, key: str, entry: Entry, session: int) -> None:
        """Hold `entry`, read or written while `session` was the channel's live session."""
        now = self._clock()
        trusted = min(entry.fresh_until, entry.stale_until, entry.expires_at)
        bounded = min(trusted, now + self.local_ttl)
        local = self._local
        local.pop(key, None)
        if session == DISCONNECTED or session != self._session:
            trusted = bounded  # a message may have been missed while it was read
        if trusted <= now:
            return
        local[key] = (entry, trusted, bounded, session)
        if len(local) > self.local_max_entries:
            for oldest in list(islice(local, len(local) - self.local_max_entries)):
                del local[oldest]

    # -- the push channel

    def _listening(self, loop: asyncio.AbstractEventLoop) -> None:
        channel = self._channel
        if channel is not None:
            task = loop.create_task(channel.listen())
            task.add_done_callback(_retrieve)

    async def _listen(self) -> None:
        """Make sure this loop listens; wait for the remote to catch up with a remote clear."""
        assert self._channel is not None
        await self._channel.listen()
        catching_up = self._catching_up
        if catching_up is not None:
            if not catching_up.done() and catching_up.get_loop() is asyncio.get_running_loop():
                await asyncio.wait([catching_up])
            self._catching_up = None

    def _use_session(self, session: int) -> None:
        self._session = session

    def _invalidated(self, keys: tuple[str, ...] | None) -> None:
        """Another process replaced `keys` (None: cleared everything): drop the copies."""
        # A read under way may have fetched the replaced value: it is returned but not held.
        self._writes += 1
        local = self._local
        if keys is None:
            local.clear()
            if self._push is not None:
                self._catching_up = task = asyncio.get_running_loop().create_task(
                    self._push.cleared_elsewhere()
                )
                task.add_done_callback(_retrieve)
        else:
            for key in keys:
                local.pop(key, None)
        observers = self.observers
        if observers is not None:
            observers.invalidation(("*",) if keys is None else keys, "remote")


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("polycache: near-cache background work failed: %r", task.exception())


class _LeasingNearCache(NearCacheBackend):
    """A near-cache whose remote backend holds leases; `NearCacheBackend(remote)` builds it."""

    __slots__ = ()

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Add `key` in the remote backend (`LeaseBackend.add`); nothing is held locally."""
        self._local.pop(key, None)
        remote: LeaseBackend = self._remote  # type: ignore[assignment] # chosen in __new__
        return await remote.add(key, value, ttl)
