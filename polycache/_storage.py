"""Storage: how the Cache reads and writes entries, chosen once when the Cache is built.

`MemoryStorage` keeps Python objects in the memory backend's dict, with no await and no timeout.
`RemoteStorage` serializes values, bounds every backend call by `backend_timeout`, turns
failures into misses when the cache fails open, and lets concurrent readers of one key share
one backend read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from polycache._contracts import Backend, BatchBackend, ClearableBackend, Entry, LeaseBackend
from polycache._errors import (
    BackendError,
    BackendTimeout,
    ConfigurationError,
    SerializationError,
)
from polycache._flight import Flights
from polycache._observe import BackendOutcome, Observers
from polycache._serializers import Serializer
from polycache._stats import Counters
from polycache._tags import TAG_LIFETIME, TAG_PREFIX, Tags, is_tagged, tagged, untagged
from polycache.backends.memory import MemoryBackend, Record, entry_from_record, record_from_entry

if TYPE_CHECKING:
    from polycache._breaker import Breaker
    from polycache.backends.near import NearCacheBackend

__all__ = ["MemoryStorage", "RemoteStorage", "storage_for"]

logger = logging.getLogger("polycache")

# A key whose read just timed out is not read again (nor leased) for one backend timeout, so
# that a miss against a hung backend costs one timeout; at most this many keys are remembered.
_TIMED_OUT_KEYS_LIMIT: Final = 1024

LEASE_PREFIX: Final = "__polycache_lease__:"
"""Where a key's lease lives in a shared backend: keys starting with it are polycache's."""


def lease_key(key: str) -> str:
    """The key of `key`'s lease: a digest, so that any key's lease fits every backend's limit."""
    import hashlib

    return LEASE_PREFIX + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _with_value(entry: Entry, value: Any) -> Entry:
    # dataclasses.replace() looks the fields up on every call: several times slower.
    return Entry(
        value,
        entry.fresh_until,
        entry.stale_until,
        entry.expires_at,
        entry.validator,
        entry.negative,
    )


class MemoryStorage:
    """Entries as records in the memory backend's dict: no serialization, no I/O."""

    __slots__ = ("backend", "clock", "observers", "records", "tag_index")

    def __init__(self, backend: MemoryBackend, clock: Any) -> None:
        self.backend = backend
        self.records = backend.records
        self.clock = clock
        self.observers: Observers | None = None  # in-process: no backend calls to report
        # tag -> {key: the record stored with it}; a key written again since is left alone.
        self.tag_index: dict[str, dict[str, Record]] = {}

    leases = False  # one process: single-flight is enough

    async def take_lease(self, key: str, seconds: float) -> bool | None:
        """No leases in process."""
        return None

    async def release_lease(self, key: str) -> None:
        """No leases in process."""

    async def wait_for(self, key: str, seconds: float) -> Entry | None:
        """No other process stores here."""
        return None

    def peek(self, key: str) -> Entry | None:
        """The entry under `key` unless expired, without I/O."""
        record = self.backend.peek(key)
        if record is None:
            return None
        if record[3] <= self.clock():
            self.backend.discard(key)
            return None
        return entry_from_record(record)

    async def read(self, key: str, reads: Flights[str, Entry | None]) -> Entry | None:
        """The entry under `key`, or None."""
        return self.peek(key)

    async def read_many(
        self, keys: Sequence[str], reads: Flights[str, Entry | None]
    ) -> list[Entry | None]:
        """The entries under `keys`, in order."""
        return [self.peek(key) for key in keys]

    async def write(self, key: str, entry: Entry, tags: Tags = ()) -> None:
        """Store `entry` (a `set`)."""
        self._put(key, entry, tags)

    async def store(self, key: str, entry: Entry, tags: Tags = ()) -> None:
        """Store a loaded entry."""
        self._put(key, entry, tags)

    async def write_many(self, entries: Mapping[str, Entry], tags: Tags = ()) -> None:
        """Store several entries."""
        for key, entry in entries.items():
            self._put(key, entry, tags)

    def _put(self, key: str, entry: Entry, tags: Tags) -> None:
        record = record_from_entry(entry)
        self.backend.put(key, record)
        for tag in tags:
            self.tag_index.setdefault(tag, {})[key] = record

    async def invalidate_tags(self, tags: Tags) -> None:
        """Forget every entry stored with one of `tags` (and not written again since)."""
        records = self.records
        for tag in tags:
            for key, record in self.tag_index.pop(tag, {}).items():
                if records.get(key) is record:
                    del records[key]

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        self.backend.discard(key)

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Forget several keys."""
        for key in keys:
            self.backend.discard(key)

    async def clear(self) -> None:
        """Forget every entry."""
        self.backend.clear()
        self.tag_index.clear()

    async def aclose(self) -> None:
        """Nothing to release."""


class RemoteStorage:
    """Entries in a backend that stores bytes (or objects, for a custom backend).

    Args:
        backend: The backend.
        serializer: Turns values into bytes and back; None if the backend stores objects.
        timeout: Seconds one backend operation may take, retries included.
        fail_open: Whether a failing backend counts as a miss (True) or raises.
        counters: Where backend errors and unstorable values are counted.
        clock: Returns epoch seconds.
    """

    __slots__ = (
        "backend",
        "breaker",
        "clock",
        "counters",
        "fail_open",
        "leases",
        "near",
        "observers",
        "serializer",
        "timed_out",
        "timeout",
    )

    def __init__(
        self,
        backend: Backend,
        serializer: Serializer | None,
        *,
        timeout: float,
        fail_open: bool,
        counters: Counters,
        clock: Any,
    ) -> None:
        self.backend = backend
        self.serializer = serializer
        self.timeout = timeout
        self.fail_open = fail_open
        self.counters = counters
        self.clock = clock
        # A near-cache in front of a remote backend is read synchronously first. Its module is
        # loaded only if such a backend was made, so this costs no import.
        near_module = sys.modules.get("polycache.backends.near")
        self.near: NearCacheBackend | None = (
            backend
            if near_module is not None and isinstance(backend, near_module.NearCacheBackend)
            else None
        )
        # key -> monotonic time until which its reads are skipped
        self.timed_out: dict[str, float] = {}
        self.observers: Observers | None = None
        self.breaker: Breaker | None = None
        self.leases = isinstance(backend, LeaseBackend)

    # -- reads

    async def read(self, key: str, reads: Flights[str, Entry | None]) -> Entry | None:
        """The entry under `key`, or None; concurrent readers of one key share one read."""
        near = self.near
        if near is not None and (held := near.peek(key)) is not None and not is_tagged(held.value):
            # The near-cache answers without I/O: no task, no timeout (unless the entry has
            # tags to check).
            return self.deserialize(key, held)
        if self.timed_out and self.fail_open and reads.get(key) is None and self._skipped(key):
            return None
        return await reads.run(key, lambda: self._read(key))

    async def _read(self, key: str) -> Entry | None:
        stored: Entry | None = await self.call("get", key, lambda: self.backend.get(key))
        if stored is not None and is_tagged(stored.value):
            return await self._current(key, stored)
        return self.deserialize(key, stored)

    async def _current(self, key: str, stored: Entry | None) -> Entry | None:
        """`stored`, deserialized, unless one of its tags was invalidated after it was written."""
        if stored is not None and not stored.negative and self.serializer is not None:
            carried = untagged(stored.value)
            if carried is not None:
                data, tags, written_at = carried
                if not await self._tags_allow(tags, written_at):
                    return None
                stored = _with_value(stored, data)
        return self.deserialize(key, stored)

    async def _tags_allow(self, tags: Tags, written_at: float) -> bool:
        """True if none of `tags` was invalidated at or after `written_at`."""
        keys = [TAG_PREFIX + tag for tag in tags]
        backend = self.backend
        if isinstance(backend, BatchBackend):
            found = await self.call("get_many", keys[0], lambda: backend.get_many(keys))
        else:
            found = await self.call(
                "get", keys[0], lambda: asyncio.gather(*(backend.get(key) for key in keys))
            )
        if found is None:
            return False  # the check failed: a miss is safer than a value that may be invalid
        for entry in found:
            if entry is None:
                continue
            try:
                invalidated_at = float(entry.value)
            except (TypeError, ValueError):
                return False
            if invalidated_at >= written_at:
                return False
        return True

    async def read_many(
        self, keys: Sequence[str], reads: Flights[str, Entry | None]
    ) -> list[Entry | None]:
        """The entries under `keys`, in order, in one backend call if it can batch."""
        backend = self.backend
        if len(keys) < 2 or not isinstance(backend, BatchBackend):
            return list(await asyncio.gather(*(self.read(key, reads) for key in keys)))
        stored = await self.call("get_many", keys[0], lambda: backend.get_many(list(keys)))
        if stored is None:
            return [None] * len(keys)
        # Entries with tags need their tags checked (a read); the others are decoded here.
        tagged = [
            index
            for index, entry in enumerate(stored)
            if entry is not None and is_tagged(entry.value)
        ]
        entries = [
            None if entry is not None and is_tagged(entry.value) else self.deserialize(key, entry)
            for key, entry in zip(keys, stored, strict=True)
        ]
        if tagged:
            checked = await asyncio.gather(*(self._current(keys[i], stored[i]) for i in tagged))
            for index, entry in zip(tagged, checked, strict=True):
                entries[index] = entry
        return entries

    def _skipped(self, key: str) -> bool:
        until = self.timed_out.get(key)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self.timed_out[key]
        return False

    def deserialize(self, key: str, stored: Entry | None) -> Entry | None:
        """`stored` with its value read back from bytes; None (or raises) if unreadable."""
        if stored is None or self.serializer is None or stored.negative:
            return stored
        try:
            return _with_value(stored, self.serializer.loads(stored.value))
        except SerializationError as exc:
            self.counters.backend_errors += 1
            logger.warning("polycache: cannot read the stored value of %r: %s", key, exc)
            if not self.fail_open:
                raise
            return None

    # -- writes

    def serialize(self, key: str, entry: Entry, tags: Tags = ()) -> Entry:
        """`entry` with its value as bytes, checked against the backend's item limit.

        Raises:
            SerializationError: The value cannot be serialized, or is over the limit.
        """
        serializer = self.serializer
        if serializer is None:
            if tags:
                raise ConfigurationError(
                    f"tags need a backend that stores bytes (or memory://); "
                    f"{type(self.backend).__name__} keeps objects, so {key!r} cannot carry tags"
                )
            return entry
        data = b"" if entry.negative else serializer.dumps(entry.value)
        if tags and not entry.negative:
            data = tagged(data, tags, self.clock())
        limit = self.backend.max_item_bytes
        if limit is not None and len(data) > limit:
            raise SerializationError(
                f"value for {key!r} is {len(data)} bytes serialized, over the backend's "
                f"limit of {limit} bytes"
            )
        return _with_value(entry, data)

    async def write(self, key: str, entry: Entry, tags: Tags = ()) -> None:
        """Store `entry` (a `set`): an unstorable value raises before anything is sent."""
        stored = self.serialize(key, entry, tags)
        await self.call("set", key, lambda: self.backend.set(key, stored))

    async def store(self, key: str, entry: Entry, tags: Tags = ()) -> None:
        """Store a loaded entry: an unstorable value is counted and logged, not raised."""
        try:
            stored = self.serialize(key, entry, tags)
        except (SerializationError, ConfigurationError) as exc:
            self.counters.uncached += 1
            logger.warning("polycache: not caching %r: %s", key, exc)
            return
        if entry.expires_at <= self.clock():
            return
        try:
            await self.call("set", key, lambda: self.backend.set(key, stored))
        except BackendError as exc:
            # Stored after the waiters had their answer: nobody is left to raise it to.
            logger.warning("polycache: storing the loaded value of %r failed: %s", key, exc)

    async def write_many(self, entries: Mapping[str, Entry], tags: Tags = ()) -> None:
        """Store several entries (a `set_many`): every value is serialized before any is sent."""
        stored = {key: self.serialize(key, entry, tags) for key, entry in entries.items()}
        await self._set_many(stored)

    async def _set_many(self, stored: Mapping[str, Entry]) -> None:
        if not stored:
            return
        backend = self.backend
        first = next(iter(stored))
        if isinstance(backend, BatchBackend):
            await self.call("set_many", first, lambda: backend.set_many(stored))
        else:
            await self.call(
                "set_many",
                first,
                lambda: asyncio.gather(*(backend.set(key, entry) for key, entry in stored.items())),
            )

    async def invalidate_tags(self, tags: Tags) -> None:
        """Write each tag's invalidation time: one small entry per tag, nothing scanned."""
        now = self.clock()
        until = now + TAG_LIFETIME
        marker = repr(now).encode()
        await self._set_many({TAG_PREFIX + tag: Entry(marker, until, until, until) for tag in tags})

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        self.timed_out.pop(key, None)
        await self.call("delete", key, lambda: self.backend.delete(key))

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Forget several keys."""
        if not keys:
            return
        backend = self.backend
        if isinstance(backend, BatchBackend):
            await self.call("delete_many", keys[0], lambda: backend.delete_many(list(keys)))
        else:
            await self.call(
                "delete_many",
                keys[0],
                lambda: asyncio.gather(*(backend.delete(key) for key in keys)),
            )

    async def clear(self) -> None:
        """Forget polycache's own entries.

        Raises:
            ConfigurationError: The backend cannot tell its entries from others'.
        """
        backend = self.backend
        if not isinstance(backend, ClearableBackend):
            raise ConfigurationError(
                f"{type(backend).__name__} cannot clear: it does not implement "
                "ClearableBackend.clear"
            )
        await self.call("clear", "*", backend.clear)

    async def aclose(self) -> None:
        """Release the backend's connections."""
        await self.backend.aclose()

    # -- leases: one load across the processes sharing the backend

    async def take_lease(self, key: str, seconds: float) -> bool | None:
        """Try to take `key`'s lease for `seconds`.

        Returns:
            True if this process holds it, False if another does, None if the backend could
            not say (failing open: load here).
        """
        if self.timed_out and self._skipped(key):
            return None  # its read just timed out: a lease would cost a second backend_timeout
        backend = self.backend
        assert isinstance(backend, LeaseBackend)
        token = f"{os.getpid()}".encode()
        held: bool | None = await self.call(
            "add", key, lambda: backend.add(lease_key(key), token, seconds)
        )
        return held

    async def release_lease(self, key: str) -> None:
        """Give `key`'s lease back, so that the next miss anywhere may load at once."""
        await self.call("delete", key, lambda: self.backend.delete(lease_key(key)))

    async def wait_for(self, key: str, seconds: float) -> Entry | None:
        """Poll the backend for a fresh entry under `key` for up to `seconds`; None if none."""
        deadline = time.monotonic() + seconds
        pause = 0.01
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(pause, remaining))
            # Short pauses: a waiter sees the holder's value within 20 ms of its store.
            pause = min(pause * 2, 0.02)
            entry = await self._read(key)
            if entry is not None and self.clock() < entry.fresh_until:
                return entry

    # -- every backend call goes through here

    async def call(self, operation: str, key: str, make: Callable[[], Awaitable[Any]]) -> Any:
        """Await `make()` within the backend timeout; a failure is a miss when failing open.

        While the backend's circuit breaker is open the call is not made at all.

        Raises:
            BackendError: The call failed (or was skipped) and the cache does not fail open.
            BackendTimeout: The call took longer than the timeout, likewise.
            ConfigurationError: The backend is misconfigured (never hidden as a miss).
            SerializationError: The value cannot be stored (never hidden as a miss).
        """
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            return self._skipped_call(operation, key)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                result = await make()
        except (ConfigurationError, SerializationError):
            # A misconfigured backend or an unstorable value is not an outage: failing open
            # would hide it behind a miss on every call.
            raise
        except BackendError as exc:
            # Before TimeoutError: a BackendTimeout is both, and keeps the backend's own message.
            error: BackendError = exc
            cause: Exception = exc
        except TimeoutError as exc:
            error = BackendTimeout(f"backend {operation} of {key!r} took over {self.timeout} s")
            cause = exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = BackendError(f"backend {operation} of {key!r} failed: {type(exc).__name__}")
            cause = exc
        else:
            if breaker is not None:
                breaker.succeeded()
            if self.observers is not None:
                self.observers.backend_call(operation, time.perf_counter() - started, "ok")
            return result
        if breaker is not None:
            breaker.failed()
        timed_out = isinstance(error, TimeoutError)
        if self.observers is not None:
            outcome: BackendOutcome = "timeout" if timed_out else "error"
            self.observers.backend_call(operation, time.perf_counter() - started, outcome)
        self.counters.backend_errors += 1
        if timed_out and operation == "get":
            skipped = self.timed_out
            if len(skipped) >= _TIMED_OUT_KEYS_LIMIT:
                skipped.clear()
            skipped[key] = time.monotonic() + self.timeout
        if not self.fail_open:
            if error is cause:
                raise error
            raise error from cause
        logger.warning("polycache: %s; treating it as a miss", error)
        return None

    def _skipped_call(self, operation: str, key: str) -> None:
        self.counters.backend_skipped += 1
        if self.observers is not None:
            self.observers.backend_call(operation, 0.0, "skipped")
        if not self.fail_open:
            raise BackendError(
                f"backend {operation} of {key!r} skipped: the backend failed "
                f"{self.breaker.threshold if self.breaker else 0} times in a row and its circuit "
                "is open"
            )


def storage_for(
    backend: Backend,
    serializer: Serializer,
    *,
    timeout: float,
    fail_open: bool,
    counters: Counters,
    clock: Any,
) -> MemoryStorage | RemoteStorage:
    """The storage for `backend`: in-process records for memory, else remote."""
    if isinstance(backend, MemoryBackend):
        return MemoryStorage(backend, clock)
    return RemoteStorage(
        backend,
        None if backend.stores_objects else serializer,
        timeout=timeout,
        fail_open=fail_open,
        counters=counters,
        clock=clock,
    )
