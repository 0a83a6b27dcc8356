"""`Cache`: the one stateful public class. Policy lives here; backends only store."""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from polycache._config import Duration, Settings, duration, resolve_settings
from polycache._contracts import (
    Backend,
    BatchLoader,
    ConditionalLoader,
    Entry,
    Loaded,
    LoaderFunction,
)
from polycache._errors import (
    BackendError,
    BackendTimeout,
    ConfigurationError,
    LoaderError,
    PolycacheError,
    SerializationError,
    SourceNotFound,
)
from polycache._flight import Flight
from polycache._registry import backend_from_url
from polycache._serializers import Serializer, serializer_from
from polycache.backends.memory import (
    NEGATIVE,
    MemoryBackend,
    Record,
    entry_from_record,
    record_from_entry,
)

__all__ = ["Cache", "Stats"]

if TYPE_CHECKING:
    from polycache.backends.near import NearCacheBackend

logger = logging.getLogger("polycache")

_running_loop = asyncio.get_running_loop

LoaderT = TypeVar("LoaderT", bound=LoaderFunction)

# Loader schemes that come with polycache; their modules (and botocore) load on first use.
_BUILTIN_LOADERS: Final = {
    "ssm": ("polycache.loaders.ssm", "SsmLoader"),
    "secretsmanager": ("polycache.loaders.secretsmanager", "SecretsManagerLoader"),
    "s3": ("polycache.loaders.s3", "S3Loader"),
    "dynamodb": ("polycache.loaders.dynamodb", "DynamoDbLoader"),
    "appconfig": ("polycache.loaders.appconfig", "AppConfigLoader"),
}


@dataclass(frozen=True, slots=True)
class Stats:
    """Counters since the cache was created (a snapshot; read `cache.stats` again to update).

    Attributes:
        hits: Gets answered by a fresh entry (a remembered "not found" included).
        misses: Gets that found no usable entry (then loaded, if the key has a loader).
        stale_hits: Gets answered by a stale entry while it refreshed, or after a failed load.
        loads: Loader calls (one per key, batched calls included).
        load_errors: Loads that failed (whether or not a stale value stood in).
        backend_errors: Backend operations that failed or timed out.
        uncached: Loaded values returned to the caller but too large or not serializable to store.
    """

    hits: int = 0
    misses: int = 0
    stale_hits: int = 0
    loads: int = 0
    load_errors: int = 0
    backend_errors: int = 0
    uncached: int = 0


class _Counters:
    __slots__ = (
        "backend_errors",
        "load_errors",
        "loads",
        "misses",
        "stale_hits",
        "uncached",
    )

    def __init__(self) -> None:
        self.misses = self.stale_hits = self.loads = 0
        self.load_errors = self.backend_errors = self.uncached = 0


# The internal value classes below are plain slotted classes, not dataclasses: building a
# dataclass costs about a millisecond at import, and `import polycache` is on the cold start.


class _Policy:
    __slots__ = ("keep", "negative_ttl", "stale_if_error", "stale_ttl", "ttl")

    def __init__(
        self, ttl: float, stale_ttl: float, stale_if_error: float, negative_ttl: float
    ) -> None:
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self.stale_if_error = stale_if_error
        self.negative_ttl = negative_ttl
        # How long past freshness a backend keeps an entry: the stale window, or the
        # stale-if-error window, whichever is longer.
        self.keep = max(stale_ttl, stale_if_error)


class _Route:
    """How one key is loaded: the loader, the name it is called with, and the policy."""

    __slots__ = ("load", "name", "policy")

    def __init__(self, load: LoaderFunction, name: str, policy: _Policy) -> None:
        self.load = load
        self.name = name
        self.policy = policy


class _RegisteredLoader:
    __slots__ = ("load", "policy")

    def __init__(self, load: LoaderFunction, policy: _Policy) -> None:
        self.load = load
        self.policy = policy


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()

# Handed to the callers sharing a backend read whose reader was cancelled: read again.
_READ_AGAIN: Final = Entry(None, 0.0, 0.0, 0.0)


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


def _key_error(key: object) -> ConfigurationError:
    if type(key) is not str:
        return ConfigurationError(f"cache key must be a str, got {type(key).__name__} {key!r}")
    return ConfigurationError("cache key must be a non-empty str, got ''")


def _check_key(key: object) -> str:
    if type(key) is not str or not key:
        raise _key_error(key)
    return key


def _check_loader(loader: object, what: str) -> None:
    if not callable(loader):
        raise ConfigurationError(f"{what} must be an async callable, got {loader!r}")


class Cache:
    """An async cache in front of a backend, loading misses from their sources.

    Args:
        backend: A backend URL (`"memory://"`, `"extension://127.0.0.1:4000"`,
            `"momento://CACHE_NAME"`, or any registered scheme) or a `Backend` object.
            Defaults to `POLYCACHE_BACKEND`, then `memory://`.
        ttl: Seconds (or a `timedelta`) an entry is fresh. Default `POLYCACHE_TTL`, then 300.
        stale_ttl: Seconds after that an entry is served while one background refresh runs.
            Default `POLYCACHE_STALE_TTL`, then 0.
        stale_if_error: Seconds past freshness an old value may stand in for a failed load.
            Default `POLYCACHE_STALE_IF_ERROR`, then 0.
        negative_ttl: Seconds a source's "not found" is remembered. Default
            `POLYCACHE_NEGATIVE_TTL`, then 30.
        backend_timeout: Seconds one backend operation may take, retries included. Default
            `POLYCACHE_BACKEND_TIMEOUT`, then 1.
        serializer: For backends that store bytes: `"json"` (default), `"pickle"` (only for a
            cache whose writers you trust), or an object with `dumps` and `loads`.
        fail_open: If True (default), a failing or slow backend counts as a miss and values come
            from their loaders; if False, backend failures raise `BackendError`.
        disabled: If True, every get misses and loads. Default `POLYCACHE_DISABLED`.
        clock: Returns the epoch time in seconds; injectable for tests.
        environ: The environment to read `POLYCACHE_*` from; defaults to `os.environ`.

    Raises:
        ConfigurationError: A bad argument, environment value or backend URL, named.
    """

    def __init__(
        self,
        backend: str | Backend | None = None,
        *,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
        stale_if_error: Duration | None = None,
        negative_ttl: Duration | None = None,
        backend_timeout: Duration | None = None,
        serializer: str | Serializer | None = None,
        fail_open: bool = True,
        disabled: bool | None = None,
        clock: Callable[[], float] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if (
            backend is not None
            and not isinstance(backend, str)
            and not isinstance(backend, Backend)
        ):
            raise ConfigurationError(
                f"backend must be a URL str or a Backend object, got {type(backend).__name__}"
            )
        if not isinstance(fail_open, bool):
            raise ConfigurationError(f"fail_open must be a bool, got {fail_open!r}")
        if clock is not None and not callable(clock):
            raise ConfigurationError(f"clock must be a callable returning seconds, got {clock!r}")
        settings = resolve_settings(
            environ,
            backend=backend if isinstance(backend, str) else None,
            ttl=ttl,
            stale_ttl=stale_ttl,
            stale_if_error=stale_if_error,
            negative_ttl=negative_ttl,
            backend_timeout=backend_timeout,
            disabled=disabled,
        )
        self._settings: Settings = settings
        serializer_object = serializer_from(serializer)
        self._backend: Backend = (
            backend if isinstance(backend, Backend) else backend_from_url(settings.backend)
        )
        self._clock: Callable[[], float] = clock or time.time
        self._policy = _Policy(
            ttl=settings.ttl,
            stale_ttl=settings.stale_ttl,
            stale_if_error=settings.stale_if_error,
            negative_ttl=settings.negative_ttl,
        )
        self._fail_open = fail_open
        self._disabled = settings.disabled
        # The hit path reads the memory backend synchronously: no await, no timeout needed.
        self._memory: MemoryBackend | None = (
            self._backend if isinstance(self._backend, MemoryBackend) else None
        )
        # The hit paths read the memory backend's dict directly (None when disabled: every get
        # then takes the slow path, which misses and loads).
        self._records: dict[str, Record] | None = (
            None if self._memory is None or self._disabled else self._memory.records
        )
        # A near-cache in front of a remote backend is read synchronously first. Its module is
        # loaded only if such a backend was made, so this costs no import.
        near_module = sys.modules.get("polycache.backends.near")
        self._near: NearCacheBackend | None = (
            self._backend
            if near_module is not None and isinstance(self._backend, near_module.NearCacheBackend)
            else None
        )
        self._serializer: Serializer | None = (
            None if self._backend.stores_objects else serializer_object
        )
        self._loaders: dict[str, _RegisteredLoader] = {}
        self._counters = _Counters()
        # Kept on the cache itself, not in _counters: one attribute lookup less on the hit path.
        self._hits = 0
        # What the set path needs, in one attribute: (records, clock, ttl, memory backend).
        self._fast_set: (
            tuple[dict[str, Record], Callable[[], float], float, MemoryBackend] | None
        ) = (
            (self._memory.records, self._clock, self._policy.ttl, self._memory)
            if self._memory is not None and not self._policy.stale_ttl and not self._policy.keep
            else None
        )
        # Loop-bound state, rebuilt when the running loop changes (asyncio.run per invocation).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loads: dict[str, Flight[Entry | None]] = {}
        self._reads: dict[str, list[asyncio.Future[Entry | None]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Cache:
        """Build a cache from the `POLYCACHE_*` environment variables.

        Args:
            environ: The variables to read; defaults to `os.environ`.
            **overrides: Any `Cache` argument; arguments beat environment variables.

        Raises:
            ConfigurationError: A malformed variable, naming it and what was expected.
        """
        return cls(environ=os.environ if environ is None else environ, **overrides)

    def __repr__(self) -> str:
        return (
            f"Cache(backend={self._backend!r}, ttl={self._policy.ttl}, "
            f"stale_ttl={self._policy.stale_ttl}, loaders={sorted(self._loaders)})"
        )

    @property
    def backend(self) -> Backend:
        """The backend this cache stores entries in."""
        return self._backend

    @property
    def settings(self) -> Settings:
        """The resolved configuration (arguments over environment over defaults)."""
        return self._settings

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        counters = self._counters
        return Stats(
            hits=self._hits,
            misses=counters.misses,
            stale_hits=counters.stale_hits,
            loads=counters.loads,
            load_errors=counters.load_errors,
            backend_errors=counters.backend_errors,
            uncached=counters.uncached,
        )

    # -- loaders ------------------------------------------------------------------------------

    def register_loader(
        self,
        scheme: str,
        loader: LoaderFunction,
        *,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
        stale_if_error: Duration | None = None,
        negative_ttl: Duration | None = None,
    ) -> None:
        """Load keys `"{scheme}:{name}"` on a miss by calling `await loader(name)`.

        The durations override the cache's for these keys. Registering a built-in scheme
        (`ssm`, `secretsmanager`, `s3`, `dynamodb`) replaces the built-in loader.

        Raises:
            ConfigurationError: A scheme with `:` in it, a loader that is not callable, or a bad
                duration.
        """
        if not isinstance(scheme, str) or not scheme or ":" in scheme:
            raise ConfigurationError(
                f"loader scheme must be a non-empty str without ':', got {scheme!r}"
            )
        _check_loader(loader, f"loader for {scheme!r}")
        # The cache's own durations are fixed at construction: the merge is done once, here.
        base = self._policy
        policy = _Policy(
            ttl=base.ttl if ttl is None else duration(ttl, name="ttl"),
            stale_ttl=base.stale_ttl
            if stale_ttl is None
            else duration(stale_ttl, name="stale_ttl"),
            stale_if_error=base.stale_if_error
            if stale_if_error is None
            else duration(stale_if_error, name="stale_if_error"),
            negative_ttl=base.negative_ttl
            if negative_ttl is None
            else duration(negative_ttl, name="negative_ttl"),
        )
        self._loaders[scheme] = _RegisteredLoader(loader, policy)

    def loader(
        self,
        scheme: str,
        *,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
        stale_if_error: Duration | None = None,
        negative_ttl: Duration | None = None,
    ) -> Callable[[LoaderT], LoaderT]:
        """Decorator form of `register_loader`; returns the function unchanged.

        Example:
            ```python
            @cache.loader("users", ttl=30, stale_ttl=300)
            async def load_user(user_id: str) -> dict: ...

            user = await cache.get("users:42")  # calls load_user("42") on a miss
            ```
        """

        def register(function: LoaderT) -> LoaderT:
            self.register_loader(
                scheme,
                function,
                ttl=ttl,
                stale_ttl=stale_ttl,
                stale_if_error=stale_if_error,
                negative_ttl=negative_ttl,
            )
            return function

        return register

    def _registered(self, scheme: str) -> _RegisteredLoader | None:
        registered = self._loaders.get(scheme)
        if registered is None and scheme in _BUILTIN_LOADERS:
            module_name, attribute = _BUILTIN_LOADERS[scheme]
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise ConfigurationError(
                    f"the {scheme}: loader needs its extra: pip install 'polycache[aws]' "
                    f"({exc.name or exc} is not installed)"
                ) from exc
            loader = getattr(module, attribute)()
            registered = _RegisteredLoader(loader, self._policy)
            self._loaders[scheme] = registered
        return registered

    def _route(self, key: str) -> _Route | None:
        scheme, separator, name = key.partition(":")
        if not separator:
            return None
        registered = self._registered(scheme)
        if registered is None:
            return None
        if name.startswith("//"):
            # URL-style keys: "s3://bucket/key" loads "bucket/key".
            name = name[2:]
        return _Route(registered.load, name, registered.policy)

    def _policy_for(self, ttl: Duration | None, stale_ttl: Duration | None) -> _Policy:
        policy = self._policy
        if ttl is None and stale_ttl is None:
            return policy
        return _Policy(
            ttl=policy.ttl if ttl is None else duration(ttl, name="ttl"),
            stale_ttl=policy.stale_ttl
            if stale_ttl is None
            else duration(stale_ttl, name="stale_ttl"),
            stale_if_error=policy.stale_if_error,
            negative_ttl=policy.negative_ttl,
        )

    # -- the public operations ----------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """Return the value under `key`, loading it on a miss if its scheme has a loader.

        A fresh entry is returned at once; a stale one is returned at once while one background
        refresh runs; otherwise the loader runs (once, however many callers wait for it).

        Args:
            key: A plain key, or `"{scheme}:{name}"` for a registered or built-in loader.
            default: Returned on a miss of a plain key, and for a name the source does not have.

        Raises:
            LoaderError: The load failed and no stale value could stand in.
            BackendError: The backend failed and the cache is not `fail_open`.
            ConfigurationError: `key` is not a non-empty str.
        """
        records = self._records
        if records is not None:
            # The hit path: no await, no allocation. Re-inserting marks the key recently used.
            # A key of another hashable type misses here and is named on the slow path.
            try:
                record = records.pop(key, None)
            except TypeError:
                raise _key_error(key) from None  # unhashable, so not a str
            if record is not None:
                records[key] = record
                now = self._clock()
                if now < record[1]:
                    self._hits += 1
                    value = record[0]
                    return default if value is NEGATIVE else value
                if now < record[2] and key in self._loads and self._loop is _running_loop():
                    # Stale, and its refresh is already running: serve at once.
                    self._counters.stale_hits += 1
                    return record[0]
            flight = self._loads.get(key)
            if flight is not None and self._loop is _running_loop():
                # A stampede: the key is being loaded; wait for that load, skip the routing.
                self._counters.misses += 1
                entry = await flight.wait()
                return default if entry is None or entry.negative else entry.value
        key = _check_key(key)
        route = self._route(key)
        entry = await self._lookup(key, route)
        if entry is None or entry.negative:
            return default
        return entry.value

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        *,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
    ) -> Any:
        """Return the value under `key`, calling `await loader()` on a miss and caching it.

        Args:
            key: Any key; `loader` is used instead of a registered one.
            loader: A zero-argument async callable.
            ttl: Fresh seconds for this entry (default: the cache's).
            stale_ttl: Stale-while-revalidate seconds for this entry (default: the cache's).

        Raises:
            SourceNotFound: `loader` raised it, now or within `negative_ttl`.
            LoaderError: The load failed and no stale value could stand in.
        """
        # The same hit path as get's, written out again: a shared helper would cost a call
        # (about a third of a hit) on both.
        records = self._records
        if records is not None:
            try:
                record = records.pop(key, None)
            except TypeError:
                raise _key_error(key) from None  # unhashable, so not a str
            if record is not None:
                records[key] = record
                value = record[0]
                if value is not NEGATIVE:
                    now = self._clock()
                    if now < record[1]:
                        self._hits += 1
                        return value
                    if now < record[2] and key in self._loads and self._loop is _running_loop():
                        self._counters.stale_hits += 1
                        return value
            flight = self._loads.get(key)
            if flight is not None and self._loop is _running_loop():
                self._counters.misses += 1
                joined = await flight.wait()
                if joined is not None and not joined.negative:
                    return joined.value
        key = _check_key(key)
        _check_loader(loader, "get_or_load's loader")
        route = _Route(_ZeroArgumentLoader(loader), key, self._policy_for(ttl, stale_ttl))
        entry = await self._lookup(key, route)
        assert entry is not None
        if entry.negative:
            raise SourceNotFound(f"{key!r} was not found by its loader", key=key)
        return entry.value

    async def set(
        self,
        key: str,
        value: Any,
        *,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
    ) -> None:
        """Store `value` under `key`, fresh for `ttl` seconds (default: the cache's).

        Raises:
            SerializationError: The backend stores bytes and `value` cannot be serialized, or is
                over the backend's item limit; nothing is sent.
            BackendError: The backend failed and the cache is not `fail_open`.
        """
        fast = self._fast_set
        if fast is not None and ttl is None and stale_ttl is None and type(key) is str and key:
            # The set path for the memory backend with the cache's own durations and no stale
            # window. One float object serves all three times: a third of the memory per entry.
            records, clock, seconds, fast_memory = fast
            fresh_until = clock() + seconds
            if key in records:
                del records[key]  # re-inserted as the most recently used; the size is unchanged
                records[key] = (value, fresh_until, fresh_until, fresh_until)
            else:
                records[key] = (value, fresh_until, fresh_until, fresh_until)
                if len(records) > fast_memory.max_entries:
                    fast_memory.evict()
            if self._loads:
                self._supersede(key)
            return
        key = _check_key(key)
        policy = self._policy_for(ttl, stale_ttl)
        entry = self._new_entry(value, policy, validator=None)
        self._supersede(key)
        if self._memory is not None:
            self._memory.put(key, record_from_entry(entry))
            return
        stored = self._serialize(key, entry)
        await self._write(key, stored)

    async def delete(self, key: str) -> None:
        """Forget `key`. A load already running for it still answers its waiters, uncached."""
        key = _check_key(key)
        self._supersede(key)
        if self._memory is not None:
            self._memory.discard(key)
            return
        await self._backend_call("delete", key, self._backend.delete(key))

    async def refresh(self, key: str, loader: Callable[[], Awaitable[Any]] | None = None) -> Any:
        """Reload `key` from its source now, store it and return the new value.

        Concurrent gets and refreshes of the key share this load.

        Args:
            key: A key with a registered loader, or any key if `loader` is given.
            loader: A zero-argument async callable to use instead of the registered loader.

        Raises:
            ConfigurationError: `key` has no loader and none is given.
            SourceNotFound: The source does not have the name.
            LoaderError: The load failed.
        """
        key = _check_key(key)
        if loader is not None:
            _check_loader(loader, "refresh's loader")
            route: _Route | None = _Route(_ZeroArgumentLoader(loader), key, self._policy)
        else:
            route = self._route(key)
        if route is None:
            raise ConfigurationError(
                f"cannot refresh {key!r}: no loader is registered for its scheme and none was given"
            )
        self._check_loop()
        previous = await self._read(key)
        flight = self._loads.get(key)
        if flight is None:
            flight = self._start_load(key, route, previous, force=True)
        entry = await flight.wait()
        assert entry is not None
        if entry.negative:
            raise SourceNotFound(f"{key!r} was not found by its source", key=key)
        return entry.value

    async def get_many(
        self,
        keys: Iterable[str],
        default: Any = None,
        *,
        return_exceptions: bool = False,
    ) -> dict[str, Any]:
        """Get several keys at once, batching loads where the source allows it.

        Keys of one built-in scheme that miss are loaded in as few calls as the source allows
        (SSM GetParameters, BatchGetSecretValue, BatchGetItem). One key's failure never loses the
        others: every value that loaded is cached before any error is raised.

        Args:
            keys: The keys; duplicates are read once.
            default: The value for plain keys that miss and names the source does not have.
            return_exceptions: Put a failed key's `LoaderError` in the result instead of raising
                the first one.

        Returns:
            A dict from each key to its value (or `default`, or its error).
        """
        unique = list(dict.fromkeys(_check_key(key) for key in keys))
        self._check_loop()
        results: dict[str, Any] = {}
        batches: dict[str, list[tuple[str, _Route, Entry | None]]] = {}
        lookups: dict[str, Awaitable[Entry | None]] = {}
        routes = {key: self._route(key) for key in unique}
        if self._memory is not None:
            # Reads from memory never wait: a task per key would be pure overhead.
            entries = [await self._read(key) for key in unique]
        else:
            entries = await asyncio.gather(*(self._read(key) for key in unique))
        now = self._clock()
        for key, entry in zip(unique, entries, strict=True):
            route = routes[key]
            loader: object = route.load if route is not None else None
            if (
                route is not None
                and isinstance(loader, BatchLoader)
                and not self._disabled
                and key not in self._loads
                and (entry is None or now >= entry.stale_until)
            ):
                scheme = key.partition(":")[0]
                batches.setdefault(scheme, []).append((key, route, entry))
            else:
                lookups[key] = self._decide(key, route, entry, now)
        for batch in batches.values():
            if len(batch) == 1:
                key, route, entry = batch[0]
                lookups[key] = self._decide(key, route, entry, now)
                continue
            for key, flight in self._start_batch(batch).items():
                self._counters.misses += 1
                lookups[key] = flight.wait()
        outcomes = await asyncio.gather(*lookups.values(), return_exceptions=True)
        first_error: BaseException | None = None
        for key, outcome in zip(lookups, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError) or not isinstance(
                    outcome, Exception
                ):
                    raise outcome
                if return_exceptions:
                    results[key] = outcome
                elif first_error is None:
                    first_error = outcome
            elif outcome is None or outcome.negative:
                results[key] = default
            else:
                results[key] = outcome.value
        if first_error is not None:
            raise first_error
        return {key: results[key] for key in unique if key in results}

    async def aclose(self) -> None:
        """Cancel background refreshes and release the backend's connections.

        The cache can be used again afterwards; connections are made anew.
        """
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._backend.aclose()
        aws = sys.modules.get("polycache.loaders._aws")
        if aws is not None:
            # The AWS clients are shared by every cache in the process; the next use rebuilds them.
            await aws.close_clients()

    async def __aenter__(self) -> Cache:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the miss path ------------------------------------------------------------------------

    def _supersede(self, key: str) -> None:
        flight = self._loads.get(key)
        if flight is not None:
            flight.superseded = True

    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Futures and tasks of a finished loop can never complete: start afresh.
            self._loop = loop
            self._loads = {}
            self._reads = {}
            self._tasks = set()

    async def _lookup(self, key: str, route: _Route | None) -> Entry | None:
        self._check_loop()
        if self._memory is not None:
            entry = await self._read(key)
        elif self._near is not None and (held := self._near.peek(key)) is not None:
            # The near-cache answers without I/O: no task, no timeout.
            entry = self._deserialize(key, held)
        else:
            # With a remote backend, concurrent callers of one key share one backend read. The
            # first caller reads in its own task (a task per read would cost a loop iteration
            # or two) and hands the result to each caller that came meanwhile; a caller alone
            # pays for no future at all.
            waiters = self._reads.get(key)
            if waiters is None:
                waiters = self._reads[key] = []
                try:
                    entry = await self._read(key)
                except BaseException as exc:
                    self._forget_read(key, waiters)
                    for waiter in waiters:
                        if waiter.done():
                            continue
                        if isinstance(exc, Exception):
                            waiter.set_exception(exc)
                        else:
                            # Cancelled: the others read again, not share the cancellation.
                            waiter.set_result(_READ_AGAIN)
                    raise
                # Forgotten before the result is out: the next caller reads afresh.
                self._forget_read(key, waiters)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(entry)
            else:
                waiter = asyncio.get_running_loop().create_future()
                waiters.append(waiter)
                entry = await waiter
                if entry is _READ_AGAIN:
                    return await self._lookup(key, route)
        return await self._decide(key, route, entry, self._clock())

    def _forget_read(self, key: str, waiters: list[asyncio.Future[Entry | None]]) -> None:
        if self._reads.get(key) is waiters:
            del self._reads[key]

    async def _decide(
        self, key: str, route: _Route | None, entry: Entry | None, now: float
    ) -> Entry | None:
        counters = self._counters
        if self._disabled:
            entry = None
        if entry is not None:
            if now < entry.fresh_until:
                self._hits += 1
                return entry
            if now < entry.stale_until and not entry.negative:
                counters.stale_hits += 1
                if route is not None and key not in self._loads:
                    self._start_load(key, route, entry, force=False)
                return entry
        counters.misses += 1
        if route is None:
            return None
        flight = self._loads.get(key)
        if flight is None:
            flight = self._start_load(key, route, entry, force=False)
        result = await flight.wait()
        if result is not None and result is entry:
            # The load failed and the previous value stood in for it.
            counters.stale_hits += 1
        return result

    def _track(self, coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        # Strong references until done, so a refresh nobody awaits is never collected mid-flight.
        tasks = self._tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    def _start_load(
        self, key: str, route: _Route, previous: Entry | None, *, force: bool
    ) -> Flight[Entry | None]:
        task = self._track(self._load(key, route, previous, serve_stale=not force))
        flight = Flight(task, functools.partial(self._forget_load, key))
        self._loads[key] = flight
        return flight

    def _forget_load(self, key: str, flight: Flight[Entry | None]) -> None:
        if self._loads.get(key) is flight:
            del self._loads[key]

    async def _load(
        self, key: str, route: _Route, previous: Entry | None, *, serve_stale: bool
    ) -> Entry | None:
        counters = self._counters
        counters.loads += 1
        policy = route.policy
        load: Any = route.load
        try:
            if (
                isinstance(load, ConditionalLoader)
                and previous is not None
                and previous.validator is not None
                and not previous.negative
            ):
                loaded = await load.load_conditional(route.name, previous.validator)
                if not loaded.modified:
                    entry = self._new_entry(previous.value, policy, previous.validator)
                    await self._store(key, entry)
                    return entry
                entry = self._new_entry(loaded.value, policy, loaded.validator)
            else:
                entry = self._loaded_entry(await load(route.name), policy)
        except SourceNotFound:
            entry = self._negative_entry(policy)
            await self._store(key, entry)
            return entry
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._stale_or_raise(key, previous, policy, exc, serve_stale=serve_stale)
        await self._store(key, entry)
        return entry

    def _stale_or_raise(
        self,
        key: str,
        previous: Entry | None,
        policy: _Policy,
        exc: Exception,
        *,
        serve_stale: bool = True,
    ) -> Entry:
        self._counters.load_errors += 1
        if (
            serve_stale
            and previous is not None
            and not previous.negative
            and self._clock() <= previous.fresh_until + policy.keep
        ):
            logger.warning(
                "polycache: loading %r failed (%s); serving the previous value",
                key,
                type(exc).__name__,
            )
            return previous
        if isinstance(exc, LoaderError | ConfigurationError):
            # Already says what went wrong (a malformed key names what was expected).
            raise exc
        raise LoaderError(f"loading {key!r} failed: {type(exc).__name__}", key=key) from exc

    def _start_batch(
        self, batch: list[tuple[str, _Route, Entry | None]]
    ) -> dict[str, Flight[Entry | None]]:
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[Entry | None]] = {}
        flights: dict[str, Flight[Entry | None]] = {}
        for key, _, _ in batch:
            futures[key] = loop.create_future()
            flights[key] = Flight(futures[key], functools.partial(self._forget_load, key))
            self._loads[key] = flights[key]
        self._track(self._load_batch(batch, futures))
        return flights

    async def _load_batch(
        self,
        batch: list[tuple[str, _Route, Entry | None]],
        futures: dict[str, asyncio.Future[Entry | None]],
    ) -> None:
        loader = cast(BatchLoader, batch[0][1].load)
        self._counters.loads += len(batch)
        try:
            try:
                values = await loader.load_many([route.name for _, route, _ in batch])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                values = {route.name: exc for _, route, _ in batch}
            for key, route, previous in batch:
                future = futures[key]
                value = values.get(route.name, _MISSING)
                try:
                    if value is _MISSING or isinstance(value, SourceNotFound):
                        entry = self._negative_entry(route.policy)
                    elif isinstance(value, Exception):
                        future.set_result(self._stale_or_raise(key, previous, route.policy, value))
                        continue
                    else:
                        entry = self._loaded_entry(value, route.policy)
                    await self._store(key, entry)
                    future.set_result(entry)
                except PolycacheError as exc:
                    future.set_exception(exc)
        finally:
            for future in futures.values():
                if not future.done():
                    future.cancel()

    # -- entries and the backend --------------------------------------------------------------

    def _new_entry(self, value: Any, policy: _Policy, validator: str | None) -> Entry:
        now = self._clock()
        fresh_until = now + policy.ttl
        stale_until = fresh_until + policy.stale_ttl if policy.stale_ttl else fresh_until
        keep = policy.keep
        if validator is not None:
            # Kept one more ttl so that an expired entry can be revalidated (S3 If-None-Match)
            # instead of downloaded again.
            keep = max(keep, policy.ttl)
        expires_at = fresh_until + keep if keep else fresh_until
        return Entry(value, fresh_until, stale_until, expires_at, validator)

    def _loaded_entry(self, value: Any, policy: _Policy) -> Entry:
        """The entry for what a loader returned: a plain value, or `Loaded` with a validator."""
        if isinstance(value, Loaded):
            return self._new_entry(value.value, policy, value.validator)
        return self._new_entry(value, policy, None)

    def _negative_entry(self, policy: _Policy) -> Entry:
        until = self._clock() + policy.negative_ttl
        return Entry(None, until, until, until, None, True)

    def _serialize(self, key: str, entry: Entry) -> Entry:
        serializer = self._serializer
        if serializer is None:
            return entry
        data = b"" if entry.negative else serializer.dumps(entry.value)
        limit = self._backend.max_item_bytes
        if limit is not None and len(data) > limit:
            raise SerializationError(
                f"value for {key!r} is {len(data)} bytes serialized, over the backend's "
                f"limit of {limit} bytes"
            )
        return _with_value(entry, data)

    async def _store(self, key: str, entry: Entry) -> None:
        flight = self._loads.get(key)
        if flight is not None and flight.superseded:
            # A set or delete came while this load ran: what it wrote is newer than the load.
            return
        if self._memory is not None:
            self._memory.put(key, record_from_entry(entry))
            return
        try:
            stored = self._serialize(key, entry)
        except SerializationError as exc:
            self._counters.uncached += 1
            logger.warning("polycache: not caching %r: %s", key, exc)
            return
        if entry.expires_at <= self._clock():
            return
        await self._write(key, stored)

    async def _write(self, key: str, stored: Entry) -> None:
        await self._backend_call("set", key, self._backend.set(key, stored))

    async def _read(self, key: str) -> Entry | None:
        if self._memory is not None:
            record = self._memory.peek(key)
            if record is None:
                return None
            if record[3] <= self._clock():
                self._memory.discard(key)
                return None
            return entry_from_record(record)
        stored: Entry | None = await self._backend_call("get", key, self._backend.get(key))
        return self._deserialize(key, stored)

    def _deserialize(self, key: str, stored: Entry | None) -> Entry | None:
        if stored is None or self._serializer is None or stored.negative:
            return stored
        try:
            value = self._serializer.loads(stored.value)
            return _with_value(stored, value)
        except SerializationError as exc:
            self._counters.backend_errors += 1
            logger.warning("polycache: cannot read the stored value of %r: %s", key, exc)
            if not self._fail_open:
                raise
            return None

    async def _backend_call(self, operation: str, key: str, call: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._settings.backend_timeout):
                return await call
        except (ConfigurationError, SerializationError):
            # A misconfigured backend or an unstorable value is not an outage: failing open
            # would hide it behind a miss on every call.
            raise
        except BackendError as exc:
            # Before TimeoutError: a BackendTimeout is both, and keeps the backend's own message.
            self._counters.backend_errors += 1
            error: BackendError = exc
            cause: Exception = exc
        except TimeoutError as exc:
            self._counters.backend_errors += 1
            error = BackendTimeout(
                f"backend {operation} of {key!r} took over {self._settings.backend_timeout} s"
            )
            cause = exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._counters.backend_errors += 1
            error = BackendError(f"backend {operation} of {key!r} failed: {type(exc).__name__}")
            cause = exc
        if not self._fail_open:
            if error is cause:
                raise error
            raise error from cause
        logger.warning("polycache: %s; treating it as a miss", error)
        return None


class _ZeroArgumentLoader:
    """Adapts get_or_load's `loader()` to the `loader(name)` form."""

    __slots__ = ("_loader",)

    def __init__(self, loader: Callable[[], Awaitable[Any]]) -> None:
        self._loader = loader

    async def __call__(self, name: str) -> Any:
        return await self._loader()
