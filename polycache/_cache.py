"""`Cache`: the one stateful public class, a straight pipeline over its mechanisms.

Each mechanism lives in its own module: settings in `_config`, durations and entry building in
`_policy`, the loader table in `_routing`, storage (memory or remote: serialization, the backend
timeout, fail-open, shared reads) in `_storage`, and loads (single-flight, `load_timeout`,
stale-if-error, batches) in `_loading`, whose per-event-loop state the Cache replaces in one
assignment when the running loop changes. The memory hit paths are written out here, inline:
a helper call would cost about a third of a hit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from polycache._config import UNSET, Duration, Settings, Unset, duration, resolve_settings
from polycache._contracts import Backend, Entry, LoaderFunction
from polycache._errors import ConfigurationError, SourceNotFound
from polycache._loading import Batch, Loading, LoopState
from polycache._observe import BreakerState, LookupOutcome, Observer, Observers
from polycache._policy import Policy
from polycache._registry import backend_from_url
from polycache._routing import LoaderTable, Route, zero_argument_route
from polycache._serializers import Serializer, serializer_from
from polycache._stats import Counters, Stats
from polycache._storage import MemoryStorage, RemoteStorage, storage_for
from polycache._tags import TagsOption, check_tags, is_tagged
from polycache.backends.memory import NEGATIVE, Record

if TYPE_CHECKING:
    from polycache._memoize import Memoizer
    from polycache._sync import SyncCache

__all__ = ["Cache", "Stats"]

logger = logging.getLogger("polycache")

_running_loop: Final = asyncio.get_running_loop

_UNREADABLE: Final = object()

LoaderT = TypeVar("LoaderT", bound=LoaderFunction)


def _key_error(key: object) -> ConfigurationError:
    if type(key) is not str:
        return ConfigurationError(f"cache key must be a str, got {type(key).__name__} {key!r}")
    return ConfigurationError("cache key must be a non-empty str, got ''")


_RESERVED: Final = "__polycache_"


def _check_key(key: object) -> str:
    if type(key) is not str or not key:
        raise _key_error(key)
    if key.startswith(_RESERVED):
        raise _reserved_error(key)
    return key


def _reserved_error(key: str) -> ConfigurationError:
    return ConfigurationError(
        f"cache key {key[:64]!r} starts with {_RESERVED!r}, which polycache keeps for its own "
        "entries (tag invalidations, leases)"
    )


def _check_keys(keys: object, operation: str) -> list[str]:
    """The distinct keys of an iterable of keys, in order; a lone str is a mistake."""
    if isinstance(keys, str | bytes) or not isinstance(keys, Iterable):
        raise ConfigurationError(
            f"{operation} takes an iterable of keys (a list or tuple of str), got "
            f"{type(keys).__name__} {keys!r}"
        )
    unique: dict[str, None] = {}
    for key in keys:
        if type(key) is not str or not key:
            raise _key_error(key)
        if key.startswith(_RESERVED):
            raise _reserved_error(key)
        unique[key] = None
    return list(unique)


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
        load_timeout: Seconds one load may run; a load that runs longer is cancelled, its
            waiters get `LoaderError` (or the stale value, where stale-if-error allows) and the
            next caller loads afresh. `None` disables the limit. Default
            `POLYCACHE_LOAD_TIMEOUT`, then 30.
        ttl_jitter: The fraction of `ttl` by which each entry's freshness is randomly
            shortened, so that entries loaded together do not expire together. Default
            `POLYCACHE_TTL_JITTER`, then 0.
        early_refresh: Refresh each loaded entry in the background at a random moment before
            it expires, sooner for slower loads (probabilistic early expiration, "XFetch"), so
            that a hot key is reloaded before anyone has to wait for it.
        lease_wait: On a backend shared by several processes (`LeaseBackend`), seconds a miss
            waits for another process that is loading the same key (it holds the key's lease)
            before loading it here; `0` turns leases off. Default `POLYCACHE_LEASE_WAIT`,
            then 2.
        observers: Objects told what the cache does (`polycache.Observer`): OpenTelemetry,
            CloudWatch metrics, your own. With none, nothing is measured.
        breaker_threshold: Consecutive failures or timeouts of a remote backend after which its
            calls are skipped (a miss, in microseconds) for `breaker_cooldown` seconds; then one
            probe call decides whether it is back. `0` turns the breaker off.
        breaker_cooldown: Seconds the breaker stays open before its probe.
        serializer: For backends that store bytes: `"json"` (default), `"pickle"` (only for a
            cache whose writers you trust), or an object with `dumps` and `loads`.
        fail_open: If True (default), a failing or slow backend counts as a miss and values come
            from their loaders; if False, backend failures raise `BackendError`.
        disabled: If True, every get misses and loads. Default `POLYCACHE_DISABLED`.
        clock: Returns the epoch time in seconds; injectable for tests.
        environ: The environment to read `POLYCACHE_*` (and the backend's own variables, such
            as `MOMENTO_API_KEY`) from; defaults to `os.environ`.

    Raises:
        ConfigurationError: A bad argument, environment value or backend URL, or a backend
            whose extra is not installed, named.
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
        load_timeout: Duration | Unset | None = UNSET,
        ttl_jitter: float | None = None,
        early_refresh: bool = False,
        lease_wait: Duration | None = None,
        observers: Iterable[Observer] = (),
        breaker_threshold: int = 5,
        breaker_cooldown: Duration = 5.0,
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
        if not isinstance(early_refresh, bool):
            raise ConfigurationError(f"early_refresh must be a bool, got {early_refresh!r}")
        if clock is not None and not callable(clock):
            raise ConfigurationError(f"clock must be a callable returning seconds, got {clock!r}")
        environ = os.environ if environ is None else environ
        settings = resolve_settings(
            environ,
            backend=backend if isinstance(backend, str) else None,
            ttl=ttl,
            stale_ttl=stale_ttl,
            stale_if_error=stale_if_error,
            negative_ttl=negative_ttl,
            backend_timeout=backend_timeout,
            load_timeout=load_timeout,
            ttl_jitter=ttl_jitter,
            lease_wait=lease_wait,
            disabled=disabled,
        )
        self._settings: Settings = settings
        serializer_object = serializer_from(serializer)
        self._backend: Backend = (
            backend
            if isinstance(backend, Backend)
            else backend_from_url(settings.backend, environ=environ)
        )
        self._clock: Callable[[], float] = clock or time.time
        self._policy = Policy(
            ttl=settings.ttl,
            stale_ttl=settings.stale_ttl,
            stale_if_error=settings.stale_if_error,
            negative_ttl=settings.negative_ttl,
            load_timeout=settings.load_timeout,
            ttl_jitter=settings.ttl_jitter,
            early_refresh=early_refresh,
        )
        self._disabled = settings.disabled
        self._counters = Counters()
        # Kept on the cache itself, not in _counters: one attribute lookup less on the hit path.
        self._hits = 0
        # The tables side by side: where entries live, and where values come from.
        self._storage = storage_for(
            self._backend,
            serializer_object,
            timeout=settings.backend_timeout,
            fail_open=fail_open,
            counters=self._counters,
            clock=self._clock,
        )
        self._loaders = LoaderTable(self._policy)
        self._loading = Loading(self._storage, self._counters, self._clock)
        self._loading.lease_wait = settings.lease_wait
        if (
            isinstance(breaker_threshold, bool)
            or not isinstance(breaker_threshold, int)
            or breaker_threshold < 0
        ):
            raise ConfigurationError(
                f"breaker_threshold must be an int >= 0 (0 turns it off), got {breaker_threshold!r}"
            )
        cooldown = duration(breaker_cooldown, name="breaker_cooldown", allow_zero=False)
        if breaker_threshold and isinstance(self._storage, RemoteStorage):
            from polycache._breaker import Breaker  # remote backends only: not at import

            self._storage.breaker = Breaker(breaker_threshold, cooldown, self._breaker_changed)
        self._observers: Observers | None = None
        self._reported_hits = 0
        if not isinstance(observers, Iterable):
            raise ConfigurationError(f"observers must be a list of Observer, got {observers!r}")
        for observer in observers:
            self.add_observer(observer)
        self._snapstart_opt_in(environ)
        # Loop-bound state, replaced when the running loop changes (asyncio.run per invocation).
        self._state = LoopState(None)
        # The state's table of running loads, for the set path (one attribute hop less).
        self._loads = self._state.loads
        # The hit paths read the memory backend's dict directly (None when disabled: every get
        # then takes the slow path, which misses and loads).
        memory = self._storage if isinstance(self._storage, MemoryStorage) else None
        # A near-cache in front of a remote backend is answered inline too (None when disabled).
        self._near = (
            self._storage.near
            if isinstance(self._storage, RemoteStorage) and not self._disabled
            else None
        )
        # key -> (the near-cache's held entry, its decoded value): each held entry is decoded
        # once, however often it is read.
        self._decoded: dict[str, tuple[Entry, Any]] = {}
        self._decoded_limit = 2 * (self._near.local_max_entries if self._near else 0) + 16
        self._records: dict[str, Record] | None = (
            None if memory is None or self._disabled else memory.records
        )
        # What the set path needs, in one attribute: (records, clock, ttl, max entries, backend).
        policy = self._policy
        self._fast_set: tuple[dict[str, Record], Callable[[], float], float, Any] | None = (
            (memory.records, self._clock, policy.ttl, memory.backend)
            if memory is not None
            and not policy.stale_ttl
            and not policy.keep
            and not policy.ttl_jitter
            else None
        )

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
            f"stale_ttl={self._policy.stale_ttl}, loaders={self._loaders!r})"
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
        """A snapshot of the counters, and the state of the backend's circuit breaker."""
        breaker = getattr(self._storage, "breaker", None)
        return self._counters.snapshot(self._hits, "closed" if breaker is None else breaker.state)

    def _breaker_changed(self, state: BreakerState) -> None:
        log = logger.info if state == "closed" else logger.warning
        log("polycache: the circuit breaker of %r is now %s", self._backend, state)
        if self._observers is not None:
            self.report()
            self._observers.breaker(state)

    def report(self) -> None:
        """Hand the fresh hits counted since the last report to the observers, as one count.

        The hit path does no per-hit work for observers; this runs before every other event they
        receive, and `lambda_handler` calls it after each invocation.
        """
        observers = self._observers
        if observers is None:
            return
        count = self._hits - self._reported_hits
        if count:
            self._reported_hits = self._hits
            observers.hits(count)

    def add_observer(self, observer: Observer) -> None:
        """Start reporting to `observer` too (see `Cache(observers=...)`).

        Raises:
            ConfigurationError: `observer` does not implement `Observer`.
        """
        if not isinstance(observer, Observer):
            raise ConfigurationError(
                f"an observer implements polycache.Observer (hits, lookup, load, backend_call, "
                f"breaker, invalidation), got {observer!r}"
            )
        known = () if self._observers is None else self._observers.observers
        self._observers = Observers((*known, observer))
        self._reported_hits = self._hits
        self._loading.observers = self._storage.observers = self._observers
        near = getattr(self._storage, "near", None)
        if near is not None:
            near.observers = self._observers  # invalidations from other processes

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
        ttl_jitter: float | None = None,
        tags: TagsOption = None,
    ) -> None:
        """Load keys `"{scheme}:{name}"` on a miss by calling `await loader(name)`.

        The durations (and `ttl_jitter`) override the cache's for these keys. Registering a
        built-in scheme (`ssm`, `secretsmanager`, `s3`, `dynamodb`) replaces the built-in
        loader. `tags` (a list, or a function from the name to a list) tag every entry the
        loader loads, for `invalidate_tags`.

        Raises:
            ConfigurationError: A scheme with `:` in it, a loader that is not an async callable
                (a plain `def` function), or a bad duration.
        """
        policy = self._policy.override(
            ttl=ttl,
            stale_ttl=stale_ttl,
            stale_if_error=stale_if_error,
            negative_ttl=negative_ttl,
            ttl_jitter=ttl_jitter,
        )
        self._loaders.register(scheme, loader, policy, tags)

    def loader(
        self,
        scheme: str,
        *,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
        stale_if_error: Duration | None = None,
        negative_ttl: Duration | None = None,
        ttl_jitter: float | None = None,
        tags: TagsOption = None,
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
                ttl_jitter=ttl_jitter,
                tags=tags,
            )
            return function

        return register

    # -- the public operations ----------------------------------------------------------------

    async def get(
        self,
        key: str,
        default: Any = None,
        *,
        max_age: Duration | None = None,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
    ) -> Any:
        """Return the value under `key`, loading it on a miss if its scheme has a loader.

        A fresh entry is returned at once; a stale one is returned at once while one background
        refresh runs; otherwise the loader runs (once, however many callers wait for it).

        Args:
            key: A plain key, or `"{scheme}:{name}"` for a registered or built-in loader.
            default: Returned on a miss of a plain key, and for a name the source does not have.
            max_age: For this call, an entry written this many seconds ago or more counts as
                expired (Powertools' `max_age`; `0` forces a reload, like `force_fetch`).
            ttl: Fresh seconds for the entry if this call loads it (default: the loader's).
            stale_ttl: Stale-while-revalidate seconds likewise.

        Raises:
            LoaderError: The load failed and no stale value could stand in.
            BackendError: The backend failed and the cache is not `fail_open`.
            ConfigurationError: `key` is not a non-empty str.
        """
        records = self._records
        if records is not None and max_age is None:
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
                state = self._state
                if now < record[2] and key in state.loads and state.loop is _running_loop():
                    # Stale, and its refresh is already running: serve at once.
                    self._looked_up(key, "stale")
                    return record[0]
            state = self._state
            flight = state.loads.get(key)
            if flight is not None and not flight.superseded and state.loop is _running_loop():
                # A stampede: the key is being loaded; wait for that load, skip the routing.
                self._looked_up(key, "miss")
                entry = await flight.wait()
                return default if entry is None or entry.negative else entry.value
        elif max_age is None and self._near is not None:
            # A near-cache hit: no await, and the value decoded once per held entry.
            try:
                held = self._near.peek(key)
            except TypeError:
                raise _key_error(key) from None  # unhashable, so not a str
            if held is not None:
                decoded = self._decoded.get(key)
                if decoded is not None and decoded[0] is held:
                    self._hits += 1
                    return decoded[1]
                if held.negative:
                    self._hits += 1
                    return default
                value = self._decode_held(key, held)
                if value is not _UNREADABLE:
                    self._hits += 1
                    return value
        key = _check_key(key)
        route = self._loaders.route(key)
        if route is not None and (ttl is not None or stale_ttl is not None):
            route = route.with_policy(route.policy.override(ttl=ttl, stale_ttl=stale_ttl))
        entry = await self._lookup(
            key, route, None if max_age is None else duration(max_age, name="max_age")
        )
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
        tags: Iterable[str] | None = None,
    ) -> Any:
        """Return the value under `key`, calling `await loader()` on a miss and caching it.

        Args:
            key: Any key; `loader` is used instead of a registered one.
            loader: A zero-argument async callable.
            ttl: Fresh seconds for this entry (default: the cache's).
            stale_ttl: Stale-while-revalidate seconds for this entry (default: the cache's).
            tags: Names that `invalidate_tags` can later invalidate the loaded entry by.

        Raises:
            SourceNotFound: `loader` raised it, now or within `negative_ttl`.
            LoaderError: The load failed and no stale value could stand in.
            ConfigurationError: `loader` is not an async callable.
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
                    state = self._state
                    if now < record[2] and key in state.loads and state.loop is _running_loop():
                        self._looked_up(key, "stale")
                        return value
            state = self._state
            flight = state.loads.get(key)
            if flight is not None and not flight.superseded and state.loop is _running_loop():
                self._looked_up(key, "miss")
                joined = await flight.wait()
                if joined is not None and not joined.negative:
                    return joined.value
        key = _check_key(key)
        policy = self._policy.override(ttl=ttl, stale_ttl=stale_ttl)
        route = zero_argument_route(
            key, loader, policy, "get_or_load's loader", () if tags is None else check_tags(tags)
        )
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
        tags: Iterable[str] | None = None,
    ) -> None:
        """Store `value` under `key`, fresh for `ttl` seconds (default: the cache's).

        A load of `key` already running still answers its waiters, but its value is not
        stored, and later callers do not join it.

        Args:
            key: The key.
            value: Any value (JSON-serializable for a remote backend, by default).
            ttl: Fresh seconds (default: the cache's).
            stale_ttl: Stale-while-revalidate seconds (default: the cache's).
            tags: Names that `invalidate_tags` can later invalidate this entry by.

        Raises:
            SerializationError: The backend stores bytes and `value` cannot be serialized, or is
                over the backend's item limit; nothing is sent.
            BackendError: The backend failed and the cache is not `fail_open`.
            ConfigurationError: A bad key, duration or tag.
        """
        fast = self._fast_set
        if (
            fast is not None
            and ttl is None
            and stale_ttl is None
            and tags is None
            and type(key) is str
            and key
        ):
            # The set path for the memory backend with the cache's own durations and no stale
            # window. One float object serves all three times: a third of the memory per entry.
            records, clock, seconds, memory = fast
            fresh_until = clock() + seconds
            if key in records:
                del records[key]  # re-inserted as the most recently used; the size is unchanged
                records[key] = (value, fresh_until, fresh_until, fresh_until)
            else:
                records[key] = (value, fresh_until, fresh_until, fresh_until)
                if len(records) > memory.max_entries:
                    memory.evict()
            if self._loads:
                self._supersede(key)
            return
        key = _check_key(key)
        entry = self._policy.override(ttl=ttl, stale_ttl=stale_ttl).entry(value, self._clock())
        self._supersede(key)
        await self._storage.write(key, entry, () if tags is None else check_tags(tags))

    async def delete(self, key: str) -> None:
        """Forget `key`. A load already running for it still answers its waiters, uncached."""
        key = _check_key(key)
        self._supersede(key)
        await self._storage.delete(key)
        self._invalidated((key,), "delete")

    async def set_many(
        self,
        mapping: Mapping[str, Any],
        *,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
        tags: Iterable[str] | None = None,
    ) -> None:
        """Store every value of `mapping` under its key, in as few backend calls as it allows.

        Every value is checked (serialized, against the item limit) before any is stored.

        Raises:
            ConfigurationError: `mapping` is not a mapping of non-empty str keys.
            SerializationError: A value cannot be stored; nothing is sent.
            BackendError: The backend failed and the cache is not `fail_open`.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigurationError(
                f"set_many takes a mapping of keys to values, got {type(mapping).__name__}"
            )
        policy = self._policy.override(ttl=ttl, stale_ttl=stale_ttl)
        now = self._clock()
        entries = {_check_key(key): policy.entry(value, now) for key, value in mapping.items()}
        for key in entries:
            self._supersede(key)
        await self._storage.write_many(entries, () if tags is None else check_tags(tags))

    async def delete_many(self, keys: Iterable[str]) -> None:
        """Forget every key in `keys` (a list or tuple of str), in as few backend calls as allowed.

        Raises:
            ConfigurationError: `keys` is a str or not an iterable of non-empty str.
        """
        unique = _check_keys(keys, "delete_many")
        for key in unique:
            self._supersede(key)
        await self._storage.delete_many(unique)
        self._invalidated(unique, "delete")

    async def invalidate_tags(self, *tags: str) -> None:
        """Make every entry stored with one of `tags` a miss, in every process.

        On a shared backend this writes one small entry per tag (the tag's invalidation time);
        no key is scanned. Loads running now still answer their waiters but store nothing.

        Raises:
            ConfigurationError: No tag, or a tag that is not a non-empty str.
        """
        names = check_tags(tags, "invalidate_tags' tags")
        if not names:
            raise ConfigurationError("invalidate_tags needs at least one tag")
        for flight in self._state.loads.values():
            flight.superseded = True
        await self._storage.invalidate_tags(names)
        self._invalidated(names, "tags")

    async def exists(self, key: str) -> bool:
        """True if a value is cached under `key`, fresh or stale; never loads, counts nothing.

        A remembered "not found" is not a value: it answers False.
        """
        key = _check_key(key)
        if self._disabled:
            return False
        state = self._current_state()
        flight = state.loads.get(key)
        # Loaded, and its value on its way to the backend: it is there for this process.
        entry = None if flight is None or flight.superseded else flight.published()
        if entry is None:
            entry = await self._storage.read(key, state.reads)
        return entry is not None and not entry.negative and self._clock() < entry.stale_until

    async def clear(self) -> None:
        """Forget every entry polycache stored.

        That is the whole in-process store (memory), or on a shared backend only polycache's
        own keys, never other data it holds. Loads running now still answer their waiters,
        but store nothing.

        Raises:
            ConfigurationError: The backend cannot tell polycache's entries from others'.
        """
        for flight in self._state.loads.values():
            flight.superseded = True
        await self._storage.clear()
        self._invalidated(("*",), "clear")

    async def refresh(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]] | None = None,
        *,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
        tags: Iterable[str] | None = None,
    ) -> Any:
        """Reload `key` from its source now, store it and return the new value.

        Concurrent gets and refreshes of the key share this load; a load that a `set` or
        `delete` superseded is never joined.

        Args:
            key: A key with a registered loader, or any key if `loader` is given.
            loader: A zero-argument async callable to use instead of the registered loader.
            ttl: Fresh seconds for the reloaded entry (default: the loader's, or the cache's).
            stale_ttl: Stale-while-revalidate seconds likewise.
            tags: Tags for the reloaded entry, with a `loader` given here.

        Raises:
            ConfigurationError: `key` has no loader and none is given.
            SourceNotFound: The source does not have the name.
            LoaderError: The load failed.
        """
        key = _check_key(key)
        policy = self._policy.override(ttl=ttl, stale_ttl=stale_ttl)
        route: Route | None
        if loader is not None:
            route = zero_argument_route(
                key, loader, policy, "refresh's loader", () if tags is None else check_tags(tags)
            )
        else:
            route = self._loaders.route(key)
            if route is not None and policy is not self._policy:
                route = route.with_policy(route.policy.override(ttl=ttl, stale_ttl=stale_ttl))
        if route is None:
            raise ConfigurationError(
                f"cannot refresh {key!r}: no loader is registered for its scheme and none was given"
            )
        state = self._current_state()
        previous = await self._storage.read(key, state.reads)
        flight = state.loads.get(key)
        if flight is None or flight.superseded or flight.future.done():
            # A load that already answered (and is storing its value) is not "now".
            flight = self._loading.start(state, key, route, previous, force=True)
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
            keys: The keys (a list or tuple of str; a lone str is refused); duplicates are read
                once.
            default: The value for plain keys that miss and names the source does not have.
            return_exceptions: Put a failed key's `LoaderError` in the result instead of raising
                the first one.

        Returns:
            A dict from each key to its value (or `default`, or its error).

        Raises:
            ConfigurationError: `keys` is a str or not an iterable of non-empty str.
        """
        unique = _check_keys(keys, "get_many")
        results: dict[str, Any] = {}
        records = self._records
        if records is not None:
            # Fresh keys are answered inline, as get's hit path does.
            now = self._clock()
            missed: list[str] = []
            for key in unique:
                record = records.pop(key, None)
                if record is None:
                    missed.append(key)
                    continue
                records[key] = record
                if now < record[1]:
                    value = record[0]
                    results[key] = default if value is NEGATIVE else value
                else:
                    missed.append(key)
            self._hits += len(results)
            if not missed:
                return results
        else:
            missed = unique
        await self._get_missed(missed, default, results, return_exceptions=return_exceptions)
        return {key: results[key] for key in unique if key in results}

    async def _get_missed(
        self,
        keys: list[str],
        default: Any,
        results: dict[str, Any],
        *,
        return_exceptions: bool,
    ) -> None:
        state = self._current_state()
        entries = await self._storage.read_many(keys, state.reads)
        now = self._clock()
        batches: dict[str, Batch] = {}
        lookups: dict[str, Awaitable[Entry | None]] = {}
        hits = 0
        for key, entry in zip(keys, entries, strict=True):
            if entry is not None and now < entry.fresh_until and not self._disabled:
                # A hit needs no coroutine of its own.
                hits += 1
                results[key] = default if entry.negative else entry.value
                continue
            route = self._loaders.route(key)
            if (
                route is not None
                and route.batch is not None
                and route.scheme is not None
                and not self._disabled
                and key not in state.loads
                and (entry is None or now >= entry.stale_until)
            ):
                batches.setdefault(route.scheme, []).append((key, route, entry))
            else:
                lookups[key] = self._decide(state, key, route, entry, now)
        for batch in batches.values():
            if len(batch) == 1:
                key, route, entry = batch[0]
                lookups[key] = self._decide(state, key, route, entry, now)
                continue
            for key, flight in self._loading.start_batch(state, batch).items():
                self._looked_up(key, "miss")
                lookups[key] = flight.wait()
        self._hits += hits
        if not lookups:
            return
        outcomes = await asyncio.gather(*lookups.values(), return_exceptions=True)
        first_error: BaseException | None = None
        for key, outcome in zip(lookups, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancelled, or a KeyboardInterrupt: not a key's failure
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

    async def prefetch(self, keys: Iterable[str], *, jitter: float = 0.0) -> dict[str, Exception]:
        """Load `keys` now, batched per source, so that their first `get` is a hit.

        Meant for a Lambda function's INIT phase (`lambda_handler(cache=..., prefetch=...)`
        does it there, on the loop the invocations use). It never raises for a key that fails
        to load: the failure is logged, and the key loads on first use.

        Args:
            keys: The keys to load.
            jitter: Up to this many seconds of random delay first, so that a fleet of
                environments started together does not call the source at the same instant.

        Returns:
            The keys that failed, with their errors (empty when all loaded).

        Raises:
            ConfigurationError: `keys` is a str or not an iterable of non-empty str, or `jitter`
                is negative.
        """
        unique = _check_keys(keys, "prefetch")
        seconds = duration(jitter, name="jitter")
        if seconds:
            import random

            await asyncio.sleep(random.uniform(0, seconds))  # noqa: S311 - spreading, not secrecy
        results = await self.get_many(unique, return_exceptions=True)
        failures = {key: value for key, value in results.items() if isinstance(value, Exception)}
        for key, error in failures.items():
            logger.warning(
                "polycache: prefetching %r failed (%s); it will load on first use",
                key,
                type(error).__name__,
            )
        return failures

    async def aclose(self) -> None:
        """Cancel background refreshes and release the backend's connections.

        The cache can be used again afterwards; connections are made anew.
        """
        await self._state.cancel()
        await self._storage.aclose()
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

    def _decode_held(self, key: str, held: Entry) -> Any:
        # The value of a near-cache's entry, remembered against it; `_UNREADABLE` if it has tags
        # to check or cannot be read (then the slow path decides).
        storage = self._storage
        if not isinstance(storage, RemoteStorage) or is_tagged(held.value):
            return _UNREADABLE
        entry = storage.deserialize(key, held)
        if entry is None:
            return _UNREADABLE
        decoded = self._decoded
        if len(decoded) >= self._decoded_limit:
            decoded.clear()
        decoded[key] = (held, entry.value)
        return entry.value

    def _looked_up(self, key: str, outcome: LookupOutcome) -> None:
        counters = self._counters
        if outcome == "miss":
            counters.misses += 1
            logger.debug("polycache: miss %r", key)
        else:
            counters.stale_hits += 1
            logger.debug("polycache: serving %r stale", key)
        observers = self._observers
        if observers is not None:
            self.report()
            observers.lookup(key, outcome)

    def _invalidated(self, keys: Sequence[str], reason: str) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("polycache: invalidated %s (%s)", ", ".join(map(repr, keys)), reason)
        if self._observers is not None:
            self._observers.invalidation(keys, reason)

    def _supersede(self, key: str) -> None:
        flight = self._state.loads.get(key)
        if flight is not None:
            flight.superseded = True

    def _current_state(self) -> LoopState:
        state = self._state
        loop = _running_loop()
        if state.loop is not loop:
            # Futures and tasks of a finished loop can never complete: start afresh.
            state = self._state = LoopState(loop)
            self._loads = state.loads
        return state

    async def _lookup(
        self, key: str, route: Route | None, max_age: float | None = None
    ) -> Entry | None:
        state = self._current_state()
        entry = await self._storage.read(key, state.reads)
        now = self._clock()
        if (
            max_age is not None
            and entry is not None
            and (route.policy if route is not None else self._policy).too_old(entry, now, max_age)
        ):
            return await self._decide(state, key, route, entry, now, expired=True)
        return await self._decide(state, key, route, entry, now)

    async def _decide(
        self,
        state: LoopState,
        key: str,
        route: Route | None,
        entry: Entry | None,
        now: float,
        *,
        expired: bool = False,
    ) -> Entry | None:
        counters = self._counters
        if self._disabled:
            entry = None
        if entry is not None and not expired:
            if now < entry.fresh_until:
                self._hits += 1
                return entry
            if now < entry.stale_until and not entry.negative:
                self._looked_up(key, "stale")
                running = state.loads.get(key)
                if route is not None and (running is None or running.superseded):
                    logger.debug("polycache: refreshing %r in the background", key)
                    self._loading.start(state, key, route, entry, force=False)
                return entry
        self._looked_up(key, "miss")
        if route is None:
            return None
        flight = state.loads.get(key)
        if flight is None or flight.superseded:
            flight = self._loading.start(state, key, route, entry, force=False)
        result = await flight.wait()
        if result is not None and result is entry:
            # The load failed and the previous value stood in for it.
            counters.stale_hits += 1
        return result

    # -- other ways in ------------------------------------------------------------------------

    def cached(
        self,
        *,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
        key: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> Memoizer:
        """Memoize an `async def` function in this cache; its arguments make the key.

        Example:
            ```python
            @cache.cached(ttl=60, key="user:{user_id}")
            async def get_user(user_id: int) -> dict: ...

            await get_user(42)             # calls get_user on a miss, like get_or_load
            await get_user.invalidate(42)  # also .refresh(42) and .key(42) == "user:42"
            ```

        Args:
            ttl: Fresh seconds for its entries (default: the cache's).
            stale_ttl: Stale-while-revalidate seconds for its entries (default: the cache's).
            key: A template formatted with the call's arguments by parameter name, defaults
                applied (`"user:{user_id}"`, `"{self.tenant}:{name}"`). Default:
                `"{module}.{qualname}:"` and the arguments as compact JSON, a method's `self`
                or `cls` left out.
            tags: Tags of every entry it stores, for `invalidate_tags`.

        Raises:
            ConfigurationError: A bad duration, template or tag; when applied, a function that
                is not `async def` or a template naming no parameter of it.
        """
        from polycache._memoize import Memoizer

        return Memoizer(self, ttl=ttl, stale_ttl=stale_ttl, key=key, tags=tags)

    @functools.cached_property
    def sync(self) -> SyncCache:
        """This cache for sync code: `cache.sync.get(key)`, on `lambda_handler`'s event loop."""
        from polycache._sync import SyncCache

        return SyncCache(self)

    # -- SnapStart: called by polycache.snapstart's hooks -----------------------------------
    # Kept together at the end of the class, apart from the pipeline above.

    def _snapstart_opt_in(self, environ: Mapping[str, str]) -> None:
        """Register SnapStart hooks if this cache is built during a SnapStart INIT.

        Meant to be called at the end of `__init__` with the environment the cache was built
        with; it costs one lookup when the function is not a SnapStart one.
        """
        if environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
            from polycache.snapstart import register_from_environment

            register_from_environment(self, environ)

    def _restored(self, reload: Callable[[str], bool], stale_for: float) -> None:
        """Mark every in-process entry stale after a restore from a snapshot.

        Each entry is served at once and refreshed in the background (for at least `stale_for`
        seconds from now, even if it expired while the snapshot was stored). A key for which
        `reload` is true, and any remembered "not found", is dropped: it loads before use.
        A remote backend's entries are shared and left alone; a near-cache's local layer is
        emptied.
        """
        for flight in self._state.loads.values():
            # A load from before the snapshot used the old credentials: it stores nothing.
            flight.superseded = True
        storage = self._storage
        if isinstance(storage, RemoteStorage):
            if storage.near is not None:
                storage.near.clear_local()
            return
        now = self._clock()
        until = now + stale_for
        records = storage.records
        renewed: dict[str, tuple[Record, Record]] = {}
        for key, record in list(records.items()):
            if record[0] is NEGATIVE or reload(key):
                del records[key]
            else:
                stale = (record[0], now, max(record[2], until), max(record[3], until), *record[4:])
                # Reassigning an existing key keeps its place in the LRU order.
                records[key] = stale
                renewed[key] = (record, stale)
        # The tag index (tag -> {key: record}) knows a record by identity: point it at the new
        # ones, or invalidating a tag would leave them.
        for tagged in storage.tag_index.values():
            for key, record in tagged.items():
                pair = renewed.get(key)
                if pair is not None and pair[0] is record:
                    tagged[key] = pair[1]
