"""The plugin contracts: what a backend and a loader must look like.

A backend stores `Entry` objects under string keys. The `Cache` owns every policy decision
(freshness, staleness, single-flight, serialization); a backend only stores, returns and forgets.

The records here and elsewhere (`Entry`, `Loaded`, `Settings`, `Stats`) subclass `Frozen`
rather than being dataclasses: `import dataclasses` costs about a millisecond and each
`@dataclass` class about half of one more, on every cold start. A `Frozen` record behaves as a
`@dataclass(frozen=True, slots=True)` class with the same fields does: same constructor, `repr`,
equality, hash, pattern matching, copying and pickling, and `dataclasses.FrozenInstanceError`
on assignment.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

__all__ = [
    "Backend",
    "BackendFactory",
    "BatchBackend",
    "BatchLoader",
    "ClearableBackend",
    "ConditionalLoader",
    "Entry",
    "Frozen",
    "Loaded",
    "LoaderFunction",
    "PushBackend",
    "PushSubscription",
    "PushTransport",
    "set_field",
]

set_field = object.__setattr__
"""Sets a field in a record's `__init__` (the record's own `__setattr__` refuses)."""


class Frozen:
    """An immutable record whose fields are its `__match_args__`, in constructor order.

    A subclass declares `__slots__` and `__match_args__` (its fields), and an `__init__` taking
    them in that order that sets each with `set_field`. Two records are equal when they are of
    one class and their fields are equal; the hash is the fields' hash.
    """

    __slots__ = ()
    __match_args__: ClassVar[tuple[str, ...]] = ()

    def _fields(self) -> tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self.__match_args__])

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __setattr__(self, name: str, value: object) -> None:
        from dataclasses import FrozenInstanceError  # only on this error path

        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        from dataclasses import FrozenInstanceError

        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:
        return (type(self), self._fields())


class Entry(Frozen):
    """One cached value with its freshness, as wall-clock (epoch) seconds.

    Times are absolute so that an entry written by one process keeps its meaning in another
    (two Lambda environments sharing a Momento cache, or a function and its extension).

    Attributes:
        value: The value; bytes for a backend that does not store objects.
        fresh_until: Until this time the value is served as is.
        stale_until: Until this time it is served while one background refresh runs.
        expires_at: When the backend may forget it (covers the stale-if-error window).
        validator: The source's version tag (an S3 ETag), for conditional reloads.
        negative: The entry remembers that the source has no such name.
    """

    __slots__ = ("expires_at", "fresh_until", "negative", "stale_until", "validator", "value")
    __match_args__ = ("value", "fresh_until", "stale_until", "expires_at", "validator", "negative")

    value: Any
    fresh_until: float
    stale_until: float
    expires_at: float
    validator: str | None
    negative: bool

    def __init__(
        self,
        value: Any,
        fresh_until: float,
        stale_until: float,
        expires_at: float,
        validator: str | None = None,
        negative: bool = False,
    ) -> None:
        set_field(self, "value", value)
        set_field(self, "fresh_until", fresh_until)
        set_field(self, "stale_until", stale_until)
        set_field(self, "expires_at", expires_at)
        set_field(self, "validator", validator)
        set_field(self, "negative", negative)


@runtime_checkable
class Backend(Protocol):
    """Where entries live. Implement these members to add a backend.

    Attributes:
        stores_objects: True if the backend keeps Python objects as they are (memory). When
            False, the `Cache` hands it entries whose value is already serialized to bytes.
        max_item_bytes: The largest serialized value the backend accepts, or None for no limit.
    """

    @property
    def stores_objects(self) -> bool:
        """True if Python objects are kept as they are; False if values must be bytes."""
        ...

    @property
    def max_item_bytes(self) -> int | None:
        """The largest serialized value accepted, or None for no limit."""
        ...

    async def get(self, key: str) -> Entry | None:
        """Return the entry under `key`, or None if there is none or it has expired."""
        ...

    async def set(self, key: str, entry: Entry) -> None:
        """Store `entry` under `key`, to be kept until `entry.expires_at`."""
        ...

    async def delete(self, key: str) -> None:
        """Forget `key`; deleting a missing key is not an error."""
        ...

    async def aclose(self) -> None:
        """Release connections. The backend may be used again afterwards (it reconnects)."""
        ...


@runtime_checkable
class BatchBackend(Protocol):
    """A backend that reads, writes and forgets many keys in few round trips (optional).

    The `Cache` checks for it once, at construction; without it, bulk operations run the
    single-key methods concurrently.
    """

    async def get_many(self, keys: Sequence[str]) -> Sequence[Entry | None]:
        """Return the entries under `keys`, in order; None where there is none."""
        ...

    async def set_many(self, entries: Mapping[str, Entry]) -> None:
        """Store each entry under its key, each kept until its own `expires_at`."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Forget every key in `keys`; missing keys are not an error."""
        ...


@runtime_checkable
class ClearableBackend(Protocol):
    """A backend that can forget every entry polycache stored in it (optional)."""

    async def clear(self) -> None:
        """Forget polycache's own entries, and nothing else the store may hold."""
        ...


@runtime_checkable
class LeaseBackend(Protocol):
    """A shared backend on which one process at a time can hold a key's lease (optional).

    The `Cache` takes a lease before it loads a missing key, so that of all the processes
    sharing the backend one loads and the others wait for what it stores (`lease_wait`).
    """

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store `value` under `key` for `ttl` seconds only if `key` holds nothing yet.

        Returns:
            True if this call stored it (the caller holds the lease), False if the key was
            already there (another process holds it).
        """
        ...


@runtime_checkable
class PushSubscription(Protocol):
    """A live subscription to a backend's push channel, on the event loop that opened it."""

    async def receive(self) -> bytes | None:
        """Wait for the next message; None for a heartbeat (the server is still there).

        Raises:
            BackendError: The subscription ended (the connection dropped, the server closed
                it); the channel then subscribes again.
        """
        ...

    async def aclose(self) -> None:
        """End the subscription; never raises."""
        ...


@runtime_checkable
class PushTransport(Protocol):
    """Carries messages between the processes sharing one backend (Momento Topics, pub/sub).

    A transport only moves bytes on the running event loop; `polycache.backends.near`'s
    channel owns the rest (the message format, reconnecting, loop changes).
    """

    async def publish(self, message: bytes) -> None:
        """Send `message` to every subscriber, this process's own included.

        Raises:
            BackendError: The message could not be sent.
        """
        ...

    def connected(self) -> bool:
        """True if this event loop already has a connection (no call would open one)."""
        ...

    async def subscribe(self) -> PushSubscription:
        """Subscribe; returns once the server has confirmed that messages will be delivered.

        Raises:
            BackendError: The subscription could not be set up.
        """
        ...

    async def aclose(self) -> None:
        """Release this event loop's connection; the next call connects again."""
        ...


@runtime_checkable
class PushBackend(Protocol):
    """A backend that can push messages to the other processes sharing it (optional).

    A near-cache in front of it uses the channel to drop copies that another process replaced.
    """

    def push_transport(self) -> PushTransport:
        """The transport for this backend's invalidation messages (one per call is fine)."""
        ...

    async def cleared_elsewhere(self) -> None:
        """Another process cleared the backend: drop any state of this one that predates it.

        A backend whose `clear` deletes entries has nothing to do; one that clears by moving to
        a new generation of keys (Momento) re-reads the generation here.
        """
        ...


BackendFactory = Callable[[str], Backend]
"""Builds a backend from its URL, as given to `polycache.register_backend`."""

LoaderFunction = Callable[[str], Awaitable[Any]]
"""A loader: called with the name after the key's scheme, returns the value."""


class Loaded(Frozen):
    """What a conditional loader returns.

    Attributes:
        value: The value, or None when `modified` is False.
        validator: The version tag to send with the next conditional load.
        modified: False when the source says the cached value is still current.
    """

    __slots__ = ("modified", "validator", "value")
    __match_args__ = ("value", "validator", "modified")

    value: Any
    validator: str | None
    modified: bool

    def __init__(self, value: Any, validator: str | None = None, modified: bool = True) -> None:
        set_field(self, "value", value)
        set_field(self, "validator", validator)
        set_field(self, "modified", modified)


@runtime_checkable
class ConditionalLoader(Protocol):
    """A loader that can revalidate a cached value instead of downloading it again."""

    async def load_conditional(self, name: str, validator: str | None) -> Loaded:
        """Load `name`, or report it unchanged since `validator`."""
        ...


@runtime_checkable
class BatchLoader(Protocol):
    """A loader that can load many names in few calls (used by `Cache.get_many`)."""

    async def load_many(self, names: Sequence[str]) -> Mapping[str, Any]:
        """Load several names at once.

        Returns:
            A mapping from name to value, or to the exception that name failed with. A name
            missing from the mapping, or mapped to `SourceNotFound`, does not exist.
        """
        ...
