"""The Momento backend: one Momento cache shared by every process, over the official async SDK.

`momento://CACHE_NAME[?options]`. The `momento` package (and grpc with it) is imported on first
use of the backend, never when polycache or this module is imported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, NoReturn, Protocol, TypeVar

from polycache._contracts import Entry
from polycache._errors import BackendError, BackendTimeout, ConfigurationError, SerializationError
from polycache._extras import require_extra
from polycache._flight import Flight, Flights
from polycache._loop_bound import LoopBound
from polycache._registry import boolean, parse_options, seconds, split_url
from polycache.backends._envelope import pack, unpack
from polycache.backends._lease import lease_arguments
from polycache.backends._momento_credentials import (
    API_KEY_VARIABLE,
    ENDPOINT_VARIABLE,
    SECRET_VARIABLE,
    CredentialSource,
    EnvironmentCredentials,
    MomentoCredentials,
    NoCredentials,
    credentials_from_environment,
    log_background_failure,
)

if TYPE_CHECKING:
    from momento.auth import CredentialProvider
    from momento.config import Configuration

__all__ = [
    "BATCH_CONCURRENCY",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_GENERATION_REFRESH",
    "DEFAULT_NAMESPACE",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_TTL",
    "MAX_ITEM_BYTES",
    "MAX_TTL",
    "SUBSCRIPTION_DEADLINE",
    "TOPIC_SUFFIX",
    "ClientFactory",
    "MomentoBackend",
    "MomentoClient",
    "MomentoTopics",
]

MAX_ITEM_BYTES: Final = 5 * 1024 * 1024
"""Momento's limit for one item: key and stored bytes together."""
MAX_TTL: Final = 24 * 60 * 60.0
"""Momento keeps an item at most 24 hours."""
DEFAULT_TTL: Final = 300.0
DEFAULT_REQUEST_TIMEOUT: Final = 1.1
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
"""Seconds the connection set-up (credentials, channel, namespace generation) may take."""
DEFAULT_NAMESPACE: Final = "polycache"
"""The prefix of every key polycache writes, so that `clear` can tell its keys from others."""
DEFAULT_GENERATION_REFRESH: Final = 5.0
"""Seconds after which another process's `clear` is seen here at the latest."""
BATCH_CONCURRENCY: Final = 16
"""Requests in flight at once for one bulk operation (the Python SDK has no batch calls)."""
TOPIC_SUFFIX: Final = "-invalidations"
"""Near-caches announce replaced keys on the topic `{namespace}-invalidations` of the cache."""
SUBSCRIPTION_DEADLINE: Final = 3600.0
"""Seconds one topic subscription lasts before it is renewed (the SDK gives streams a deadline)."""
# Room kept out of the value budget for the key and the envelope's header, so that a value the
# Cache accepts fits in one Momento item with a key of up to about a kilobyte.
_ITEM_RESERVE: Final = 1024
LAMBDA_VARIABLE: Final = "AWS_LAMBDA_FUNCTION_NAME"
# The generation of a namespace that was never cleared: its keys read as "{namespace}:0:{key}".
_FIRST_GENERATION: Final = "0"
# A generation is at most this many characters (clear writes 16 hex digits).
_GENERATION_LENGTH: Final = 16

K = TypeVar("K")
T = TypeVar("T")

logger = logging.getLogger("polycache")


class MomentoClient(Protocol):
    """The part of `momento.CacheClientAsync` this backend uses."""

    async def get(self, cache_name: str, key: str) -> Any:
        """Return a `CacheGet` response."""
        ...

    async def set(self, cache_name: str, key: str, value: bytes, ttl: timedelta | None) -> Any:
        """Return a `CacheSet` response."""
        ...

    async def delete(self, cache_name: str, key: str) -> Any:
        """Return a `CacheDelete` response."""
        ...

    async def set_if_not_exists(
        self, cache_name: str, key: str, value: bytes, ttl: timedelta | None
    ) -> Any:
        """Return a `CacheSetIfNotExists` response."""
        ...

    async def create_cache(self, cache_name: str) -> Any:
        """Return a `CreateCache` response."""
        ...

    async def __aexit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None: ...


ClientFactory = Callable[["Configuration", "CredentialProvider", timedelta], MomentoClient]
"""Builds a client; `momento.CacheClientAsync` by default (its constructor, which is lazy)."""


class _Responses:
    """The SDK's response classes, looked up once when the first client is built."""

    __slots__ = (
        "add_not_stored",
        "add_stored",
        "create_error",
        "delete_success",
        "get_hit",
        "get_miss",
        "set_success",
    )

    def __init__(self) -> None:
        from momento.responses import (
            CacheDelete,
            CacheGet,
            CacheSet,
            CacheSetIfNotExists,
            CreateCache,
        )

        self.get_hit: type[Any] = CacheGet.Hit
        self.get_miss: type[Any] = CacheGet.Miss
        self.set_success: type[Any] = CacheSet.Success
        self.delete_success: type[Any] = CacheDelete.Success
        self.create_error: type[Any] = CreateCache.Error
        self.add_stored: type[Any] = CacheSetIfNotExists.Stored
        self.add_not_stored: type[Any] = CacheSetIfNotExists.NotStored


def _fail(
    operation: str, cache_name: str, error: BaseException, *, key_source: str | None = None
) -> NoReturn:
    """Raise the polycache error for an SDK error: the one place vendor errors are translated.

    Args:
        operation: What failed, for the message.
        cache_name: The Momento cache.
        error: The SDK's exception (an `SdkException`, or whatever the SDK let escape).
        key_source: Where the API key came from, when `error` is about the key itself.
    """
    from momento.errors import MomentoErrorCode, SdkException

    if key_source is not None and isinstance(error, SdkException):
        raise ConfigurationError(
            f"{key_source} does not hold a Momento v2 API key: {error.message}"
        ) from error
    if not isinstance(error, SdkException):
        raise BackendError(
            f"Momento {operation} on cache {cache_name!r} failed: {type(error).__name__}"
        ) from error
    code = error.error_code
    message = f"Momento {operation} on cache {cache_name!r} failed: {code.name}: {error.message}"
    if code is MomentoErrorCode.TIMEOUT_ERROR:
        raise BackendTimeout(message) from error
    if code in (MomentoErrorCode.AUTHENTICATION_ERROR, MomentoErrorCode.PERMISSION_ERROR):
        raise BackendError(
            f"{message} (check {API_KEY_VARIABLE} or {SECRET_VARIABLE}: the key is not accepted)"
        ) from error
    if code is MomentoErrorCode.NOT_FOUND_ERROR:
        raise BackendError(
            f"{message} (create the cache, or add create_cache=true to the momento:// URL)"
        ) from error
    raise BackendError(message) from error


def build_configuration(request_timeout: float, *, lambda_tuned: bool) -> Configuration:
    """Build the SDK configuration: Momento's Lambda or in-region settings with our deadline.

    Both are built directly: in momento 1.29, `with_client_timeout()` would rebuild the gRPC
    settings with keepalive pings on, which a frozen Lambda environment turns into dead
    connections.
    """
    from momento.config import Configurations
    from momento.config.transport.transport_strategy import (
        StaticGrpcConfiguration,
        StaticTransportStrategy,
    )
    from momento.retry import FixedCountRetryStrategy

    deadline = timedelta(seconds=request_timeout)
    retries = FixedCountRetryStrategy(max_attempts=3)
    if lambda_tuned:
        grpc_configuration = StaticGrpcConfiguration(
            deadline=deadline,
            keepalive_permit_without_calls=False,
            keepalive_time=None,
            keepalive_timeout=None,
        )
        return Configurations.Lambda(StaticTransportStrategy(grpc_configuration), retries)
    return Configurations.InRegion.Default(
        StaticTransportStrategy(StaticGrpcConfiguration(deadline=deadline)), retries
    )


def _default_client_factory(
    configuration: Configuration, provider: CredentialProvider, default_ttl: timedelta
) -> MomentoClient:
    from momento import CacheClientAsync

    # The constructor connects lazily; CacheClientAsync.create(..., timedelta(0)) would raise
    # UnboundLocalError in momento 1.29.
    client: MomentoClient = CacheClientAsync(configuration, provider, default_ttl)
    return client


async def _close_client(client: MomentoClient) -> None:
    await client.__aexit__(None, None, None)


def _ttl_option(raw: str) -> float:
    value = seconds(raw)
    if not 0 < value <= MAX_TTL:
        raise ValueError(f"expected seconds greater than 0 and at most {MAX_TTL:.0f} (24 h)")
    return value


def _timeout_option(raw: str) -> float:
    value = seconds(raw)
    if value <= 0:
        raise ValueError("expected seconds greater than 0")
    return value


def _endpoint_option(raw: str) -> tuple[str, int]:
    host, separator, port = raw.strip().rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port, such as 127.0.0.1:8080")
    return host, int(port)


class MomentoBackend:
    """Stores entries in a Momento cache, so that every process sharing it sees them.

    Each entry is one Momento item: the envelope (freshness and validator) and the serialized
    value, kept for the entry's own lifetime, at most Momento's 24 h (a longer-lived entry is
    stored for 24 h and loaded again after). Items are named `{namespace}:{generation}:{key}`:
    `clear` moves the namespace to a new generation with one write, so it forgets polycache's
    entries (left to expire) and never touches other data in the same Momento cache. Another
    process sees a `clear` within `generation_refresh` seconds.

    The SDK is imported when the backend is built, and when an event loop is running then, its
    connection is set up at once, in the background; otherwise on the first operation of each
    event loop. Either way the set-up runs in a task of its own, bounded by `connect_timeout`, so
    an operation that gives up on it (the `Cache`'s `backend_timeout`) does not waste it.

    Credentials come from `credentials`, or else the environment: `MOMENTO_API_KEY` with
    `MOMENTO_ENDPOINT` (the SDK's v2 provider), or `POLYCACHE_MOMENTO_API_KEY_SECRET` naming a
    Secrets Manager secret that holds the key, read once per process.

    Args:
        cache_name: The Momento cache.
        default_ttl: Seconds, the SDK client's default TTL; used for an entry that never expires.
        request_timeout: Seconds one attempt of a request may take (the SDK retries an
            unavailable server up to 3 times within the cache's `backend_timeout`).
        connect_timeout: Seconds the connection set-up may take (reading the key from Secrets
            Manager, opening the channel, reading the namespace's generation).
        create_cache: Create the cache on first use if it does not exist.
        endpoint: `(host, port)` of a Momento-protocol server spoken to in plaintext (Momento
            Local, or a test server); None for the Momento service itself.
        namespace: The prefix of every item polycache writes.
        generation_refresh: Seconds between reads of the namespace's generation.
        credentials: Supplies the API key; defaults to the environment's choice.
        client_factory: Builds the SDK client; defaults to `momento.CacheClientAsync`.
        environ: The environment to read; defaults to `os.environ`.
        lambda_tuned: Use Momento's Lambda settings (no keepalive pings); defaults to whether
            `AWS_LAMBDA_FUNCTION_NAME` is set.
        clock: Returns the epoch time in seconds; injectable for tests.

    Raises:
        ConfigurationError: A bad argument, credentials that are missing or malformed (named),
            or the `momento` package is not installed.
    """

    stores_objects = False
    max_item_bytes = MAX_ITEM_BYTES - _ITEM_RESERVE

    __slots__ = (
        "_cache_name",
        "_client_factory",
        "_clients",
        "_clock",
        "_connect_tasks",
        "_connect_timeout",
        "_connecting",
        "_create_cache",
        "_credentials",
        "_default_ttl",
        "_endpoint",
        "_generation_key",
        "_generation_read_at",
        "_generation_refresh",
        "_lambda_tuned",
        "_longest_prefix",
        "_namespace",
        "_opened",
        "_prefix",
        "_refreshing",
        "_request_timeout",
        "_responses",
        "_warming",
    )

    def __init__(
        self,
        cache_name: str,
        *,
        default_ttl: float = DEFAULT_TTL,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        create_cache: bool = False,
        endpoint: tuple[str, int] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        generation_refresh: float = DEFAULT_GENERATION_REFRESH,
        credentials: CredentialSource | None = None,
        client_factory: ClientFactory | None = None,
        environ: Mapping[str, str] | None = None,
        lambda_tuned: bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(cache_name, str) or not cache_name.strip():
            raise ConfigurationError(
                f"Momento cache name must be a non-empty str, got {cache_name!r}"
            )
        if not isinstance(default_ttl, int | float) or not 0 < default_ttl <= MAX_TTL:
            raise ConfigurationError(
                f"default_ttl must be seconds greater than 0 and at most {MAX_TTL:.0f} (24 h), "
                f"got {default_ttl!r}"
            )
        for name, value in (
            ("request_timeout", request_timeout),
            ("connect_timeout", connect_timeout),
            ("generation_refresh", generation_refresh),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value < math.inf
            ):
                raise ConfigurationError(
                    f"{name} must be a positive number of seconds, got {value!r}"
                )
        if not isinstance(namespace, str) or not namespace or ":" in namespace:
            raise ConfigurationError(
                f"namespace must be a non-empty str without ':', got {namespace!r}"
            )
        require_extra("the momento:// backend", "momento", "momento")
        environment = os.environ if environ is None else environ
        source = (
            credentials if credentials is not None else credentials_from_environment(environment)
        )
        if endpoint is None:
            _check_service_credentials(source)
        self._cache_name = cache_name
        self._default_ttl = float(default_ttl)
        self._request_timeout = float(request_timeout)
        self._connect_timeout = float(connect_timeout)
        self._create_cache = bool(create_cache)
        self._endpoint = endpoint
        self._namespace = namespace
        self._generation_key = f"{namespace}:generation"
        self._longest_prefix = len(namespace.encode("utf-8")) + _GENERATION_LENGTH + 2
        self._generation_refresh = float(generation_refresh)
        self._generation_read_at = -math.inf
        self._prefix = f"{namespace}:{_FIRST_GENERATION}:"
        self._credentials = source
        self._client_factory = client_factory or _default_client_factory
        self._lambda_tuned = (
            LAMBDA_VARIABLE in environment if lambda_tuned is None else lambda_tuned
        )
        self._clock = clock
        # Building the backend is choosing it: the SDK's import (0.3 s here, up to a second on
        # a small Lambda) is paid now, at init, never inside the first call's backend_timeout.
        self._responses = _Responses()
        # One connection set-up per loop, in a task of its own (Flights.start): a caller that
        # stops waiting (its backend_timeout ran out) leaves it running for the next caller,
        # who takes the client it made from `_opened`.
        self._connecting: Flights[asyncio.AbstractEventLoop, MomentoClient] = Flights()
        self._connect_tasks: set[asyncio.Task[Any]] = set()
        self._opened: dict[asyncio.AbstractEventLoop, MomentoClient] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._clients: LoopBound[MomentoClient] = LoopBound(self._connect, _close_client)
        self._warming: asyncio.Task[None] | None = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop yet (module scope): the first operation of each loop connects
        else:
            # Through the LoopBound, which closes the client when this loop shuts down, even
            # if no operation ever runs on it.
            self._warming = loop.create_task(self.connect())
            self._warming.add_done_callback(log_background_failure)

    @classmethod
    def from_url(cls, url: str, *, environ: Mapping[str, str] | None = None) -> MomentoBackend:
        """Build from `momento://CACHE_NAME[?options]`.

        Options: `default_ttl` (seconds, at most 86400), `request_timeout` and `connect_timeout`
        (seconds), `create_cache` (`true`/`false`), `endpoint` (`host:port` of a plaintext local
        server), `namespace` (the key prefix), `generation_refresh` (seconds).

        Args:
            url: The backend URL.
            environ: The environment to read credentials from; defaults to `os.environ`.
        """
        parts = split_url(url)
        if not parts.netloc or parts.path not in ("", "/"):
            raise ConfigurationError(
                f"Momento backend URL {url!r} must name one cache: expected "
                "'momento://CACHE_NAME' or 'momento://CACHE_NAME?endpoint=127.0.0.1:8080'"
            )
        options = parse_options(
            url,
            {
                "default_ttl": _ttl_option,
                "request_timeout": _timeout_option,
                "connect_timeout": _timeout_option,
                "create_cache": boolean,
                "endpoint": _endpoint_option,
                "namespace": str,
                "generation_refresh": _timeout_option,
            },
        )
        return cls(parts.netloc, environ=environ, **options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        endpoint = "momento" if self._endpoint is None else "{}:{}".format(*self._endpoint)
        return (
            f"MomentoBackend(cache_name={self._cache_name!r}, endpoint={endpoint!r}, "
            f"namespace={self._namespace!r}, credentials={self._credentials!r}, "
            f"request_timeout={self._request_timeout}, lambda_tuned={self._lambda_tuned})"
        )

    @property
    def cache_name(self) -> str:
        """The Momento cache this backend stores in."""
        return self._cache_name

    @property
    def namespace(self) -> str:
        """The prefix of every item this backend writes."""
        return self._namespace

    @property
    def connected(self) -> bool:
        """True once the running event loop's connection is set up (False outside a loop)."""
        return self._clients.current is not None

    async def connect(self) -> None:
        """Set up this event loop's connection now, if it is not set up already.

        Optional: the first operation does it otherwise. Bounded by `connect_timeout`.

        Raises:
            BackendError: The server could not be reached, or the key was not accepted.
        """
        await self._client()

    async def get(self, key: str) -> Entry | None:
        """Return the entry under `key`, or None on a miss.

        Raises:
            BackendError: Momento failed (`BackendTimeout` if it timed out).
            SerializationError: The item was not written by polycache.
        """
        client = self._clients.current or await self._client()
        response = await client.get(self._cache_name, self._item(key))
        responses = self._responses
        if isinstance(response, responses.get_hit):
            entry = unpack(response.value_bytes)
            return None if entry.expires_at <= self._clock() else entry
        if isinstance(response, responses.get_miss):
            return None
        _fail("get", self._cache_name, response.inner_exception)

    async def set(self, key: str, entry: Entry) -> None:
        """Store `entry`, kept until its `expires_at` but at most 24 h; nothing sent on an error.

        An entry fresh for longer than Momento keeps an item is stored for 24 h: Momento then
        forgets it and the next read loads it again.

        Raises:
            SerializationError: The item (key and stored bytes) is over Momento's 5 MiB.
            BackendError: Momento failed (`BackendTimeout` if it timed out).
        """
        lifetime = entry.expires_at - self._clock()
        if lifetime == math.inf:
            lifetime = self._default_ttl
        elif lifetime <= 0:
            await self.delete(key)
            return
        lifetime = max(min(lifetime, MAX_TTL), 0.001)
        blob = pack(entry)
        # Checked before connecting (which reads the generation), with the longest prefix.
        size = self._longest_prefix + len(key.encode("utf-8")) + len(blob)
        if size > MAX_ITEM_BYTES:
            raise SerializationError(
                f"the Momento item for {key!r} would be {size} bytes (key and entry), over "
                f"Momento's limit of {MAX_ITEM_BYTES} bytes"
            )
        client = self._clients.current or await self._client()
        response = await client.set(
            self._cache_name, self._item(key), blob, timedelta(seconds=lifetime)
        )
        responses = self._responses
        if not isinstance(response, responses.set_success):
            _fail("set", self._cache_name, response.inner_exception)

    async def delete(self, key: str) -> None:
        """Forget `key`; a missing key is not an error.

        Raises:
            BackendError: Momento failed (`BackendTimeout` if it timed out).
        """
        client = self._clients.current or await self._client()
        response = await client.delete(self._cache_name, self._item(key))
        responses = self._responses
        if not isinstance(response, responses.delete_success):
            _fail("delete", self._cache_name, response.inner_exception)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store `value` under `key` for `ttl` seconds (at most 24 h) only if `key` holds nothing.

        One `SetIfNotExists` call: of all the processes adding the same key, one gets True.
        The key is named in the namespace's current generation, as `get`, `set` and `delete`
        name it, so `delete(key)` forgets it; the value is stored as given, not as an entry.

        Returns:
            True if this call stored it, False if the key was already there.

        Raises:
            ConfigurationError: `value` is not bytes, or `ttl` is not a positive duration.
            BackendError: Momento failed (`BackendTimeout` if it timed out).
        """
        seconds = lease_arguments(key, value, ttl)
        lifetime = timedelta(seconds=max(min(seconds, MAX_TTL), 0.001))
        client = self._clients.current or await self._client()
        response = await client.set_if_not_exists(
            self._cache_name, self._item(key), value, lifetime
        )
        responses = self._responses
        if isinstance(response, responses.add_stored):
            return True
        if isinstance(response, responses.add_not_stored):
            return False
        _fail("add", self._cache_name, response.inner_exception)

    async def get_many(self, keys: Sequence[str]) -> Sequence[Entry | None]:
        """Return the entries under `keys`, in order: concurrent reads, `BATCH_CONCURRENCY` at once.

        Raises:
            BackendError: A read failed; the reads still running are cancelled.
        """
        return await _bounded(self.get, keys)

    async def set_many(self, entries: Mapping[str, Entry]) -> None:
        """Store each entry under its key: concurrent writes, `BATCH_CONCURRENCY` at once.

        Raises:
            SerializationError: An item over Momento's limit (checked before anything is sent).
            BackendError: A write failed; the writes still running are cancelled.
        """
        await _bounded(self._set_item, list(entries.items()))

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Forget every key in `keys`: concurrent deletes, `BATCH_CONCURRENCY` at once.

        Raises:
            BackendError: A delete failed; the deletes still running are cancelled.
        """
        await _bounded(self.delete, keys)

    async def clear(self) -> None:
        """Forget every entry polycache wrote in this namespace, with one write.

        The namespace moves to a new generation: old items are no longer read and expire on
        their own; items outside the namespace are never touched. Seen at once by this
        process, and by others within their `generation_refresh`.

        Raises:
            BackendError: Momento failed (`BackendTimeout` if it timed out).
        """
        client = self._clients.current or await self._client()
        refreshing = self._refreshing
        if refreshing is not None and not refreshing.done():
            refreshing.cancel()  # it may hold the generation this clear replaces
        generation = secrets.token_hex(_GENERATION_LENGTH // 2)
        response = await client.set(
            self._cache_name,
            self._generation_key,
            generation.encode("ascii"),
            timedelta(seconds=MAX_TTL),
        )
        responses = self._responses
        if not isinstance(response, responses.set_success):
            _fail("clear", self._cache_name, response.inner_exception)
        self._use_generation(generation)

    def push_transport(self) -> MomentoTopics:
        """Momento Topics on `{namespace}-invalidations`, for near-caches' invalidations."""
        return MomentoTopics(self)

    async def cleared_elsewhere(self) -> None:
        """Re-read the namespace's generation now: another process announced a `clear`.

        Raises:
            BackendError: Momento failed (`BackendTimeout` if it timed out).
        """
        await self._read_generation(await self._client())

    async def aclose(self) -> None:
        """Close this event loop's client; the next operation builds a new one."""
        loop = asyncio.get_running_loop()
        for task in (self._warming, *self._connect_tasks):
            if task is not None and not task.done() and task.get_loop() is loop:
                task.cancel()
        self._warming = None
        unclaimed = self._opened.pop(loop, None)
        if unclaimed is not None:
            await _close_client(unclaimed)
        await self._clients.aclose()

    async def _set_item(self, item: tuple[str, Entry]) -> None:
        await self.set(*item)

    def _item(self, key: str) -> str:
        if time.monotonic() - self._generation_read_at >= self._generation_refresh:
            self._refresh_generation()
        return self._prefix + key

    def _use_generation(self, generation: str) -> None:
        self._prefix = f"{self._namespace}:{generation}:"
        self._generation_read_at = time.monotonic()

    def _refresh_generation(self) -> None:
        """Re-read the generation in the background: the operation asking goes on at once."""
        client = self._clients.current
        refreshing = self._refreshing
        if client is None or (refreshing is not None and not refreshing.done()):
            return
        # Not asked again until this read is done or the interval has passed once more.
        self._generation_read_at = time.monotonic()
        task = asyncio.ensure_future(self._read_generation(client))
        task.add_done_callback(log_background_failure)
        self._refreshing = task

    async def _read_generation(self, client: MomentoClient) -> None:
        response = await client.get(self._cache_name, self._generation_key)
        responses = self._responses
        if isinstance(response, responses.get_hit):
            generation = response.value_bytes
            if not 0 < len(generation) <= _GENERATION_LENGTH or not generation.isalnum():
                raise BackendError(
                    f"the item {self._generation_key!r} in Momento cache {self._cache_name!r} "
                    "is not a polycache generation; clear() writes it, nothing else should"
                )
            self._use_generation(generation.decode("ascii"))
        elif isinstance(response, responses.get_miss):
            self._use_generation(_FIRST_GENERATION)
        else:
            _fail("get", self._cache_name, response.inner_exception)

    async def _client(self) -> MomentoClient:
        return self._clients.current or await self._clients.get()

    async def _connect(self) -> MomentoClient:
        """Await this loop's connection set-up, starting it if none is under way."""
        loop = asyncio.get_running_loop()
        opened = self._opened.pop(loop, None)
        if opened is not None:
            return opened  # made for a caller that stopped waiting
        flight = self._connecting.get(loop)
        if flight is None:
            flight = self._connecting.start(loop, self._open_for_later, self._connect_tasks)
        client = await flight.wait()
        self._opened.pop(loop, None)  # taken: handed to LoopBound, which owns it from here
        return client

    async def _open_for_later(self, flight: Flight[MomentoClient]) -> MomentoClient:
        client = await self._open()
        self._opened[asyncio.get_running_loop()] = client
        return client

    async def _open(self) -> MomentoClient:
        try:
            async with asyncio.timeout(self._connect_timeout) as budget:
                return await self._open_client()
        except TimeoutError as exc:
            if not budget.expired():
                raise  # a request's own timeout, already translated
            raise BackendTimeout(
                f"connecting to Momento cache {self._cache_name!r} took over "
                f"{self._connect_timeout} s (connect_timeout)"
            ) from exc

    async def _open_client(self) -> MomentoClient:
        provider = self._provider(await self._credentials())
        configuration = build_configuration(self._request_timeout, lambda_tuned=self._lambda_tuned)
        try:
            client = self._client_factory(
                configuration, provider, timedelta(seconds=self._default_ttl)
            )
        except Exception as exc:
            _fail("client setup", self._cache_name, exc)
        try:
            if self._create_cache:
                response = await client.create_cache(self._cache_name)
                if isinstance(response, self._responses.create_error):
                    _fail("create_cache", self._cache_name, response.inner_exception)
            await _wait_until_ready(client)
            if time.monotonic() - self._generation_read_at >= self._generation_refresh:
                # Process state, not the loop's: a handler that runs asyncio.run() per
                # invocation does not pay for this read on every new loop.
                await self._read_generation(client)
        except BaseException:
            await _close_client(client)
            raise
        return client

    def _provider(self, credentials: MomentoCredentials | None) -> CredentialProvider:
        from momento.auth import CredentialProvider
        from momento.errors import SdkException

        if self._endpoint is not None:
            host, port = self._endpoint
            provider = CredentialProvider.for_momento_local(host, port)
            if credentials is not None:
                provider = dataclasses.replace(provider, auth_token=credentials.api_key)
            return provider
        if credentials is None or credentials.endpoint is None:
            raise ConfigurationError(_missing_credentials_message(credentials))
        try:
            return CredentialProvider.from_api_key_v2(credentials.api_key, credentials.endpoint)
        except SdkException as exc:
            _fail("credentials", self._cache_name, exc, key_source=credentials.source)


class MomentoTopics:
    """The push transport of a `MomentoBackend`: one Momento topic per namespace.

    A `momento.TopicClientAsync` per event loop (`LoopBound`), built with the backend's
    credentials. Subscriptions resume after the last item received, so that a reconnect still
    delivers what was published meanwhile (as far as Momento keeps it).

    Args:
        backend: The backend whose cache, namespace and credentials are used.
    """

    __slots__ = ("_backend", "_clients", "_resume_at", "_resume_page", "topic")

    def __init__(self, backend: MomentoBackend) -> None:
        self._backend = backend
        self.topic = backend.namespace + TOPIC_SUFFIX
        self._clients: LoopBound[Any] = LoopBound(self._open, _close_topics)
        self._resume_at = 0
        self._resume_page = 0

    def __repr__(self) -> str:
        return f"MomentoTopics(cache_name={self._backend.cache_name!r}, topic={self.topic!r})"

    def connected(self) -> bool:
        """True if this event loop has a topics client already."""
        return self._clients.current is not None

    async def publish(self, message: bytes) -> None:
        """Publish `message` on the topic.

        Raises:
            BackendError: Momento failed (`BackendTimeout` if it timed out).
        """
        from momento.responses import TopicPublish

        client = self._clients.current or await self._clients.get()
        cache_name = self._backend.cache_name
        response = await client.publish(cache_name, self.topic, message)
        if not isinstance(response, TopicPublish.Success):
            _fail("topic publish", cache_name, response.inner_exception)

    async def subscribe(self) -> _TopicSubscription:
        """Subscribe to the topic; returns once the server has sent its first heartbeat.

        Raises:
            BackendError: Momento failed (`BackendTimeout` if it timed out).
        """
        from momento.responses import TopicSubscribe

        client = self._clients.current or await self._clients.get()
        cache_name = self._backend.cache_name
        response = await client.subscribe(
            cache_name,
            self.topic,
            resume_at_topic_sequence_number=self._resume_at,
            resume_at_topic_sequence_page=self._resume_page,
        )
        if not isinstance(response, TopicSubscribe.SubscriptionAsync):
            _fail("topic subscribe", cache_name, response.inner_exception)
        # Read directly: momento 1.29's SubscriptionAsync.__anext__ retries a failed read in a
        # loop that never yields, so a dropped stream would freeze the event loop.
        stream = getattr(response, "_client_stream", None)
        if stream is None:
            response.unsubscribe()
            raise BackendError(
                "this momento SDK's topic subscriptions cannot be read safely (no "
                "_client_stream); near-caches keep copies at most local_ttl"
            )
        return _TopicSubscription(self, response, stream)

    async def aclose(self) -> None:
        """Close this event loop's topic client (and the subscriptions on it)."""
        await self._clients.aclose()

    async def _open(self) -> Any:
        from momento import TopicClientAsync
        from momento.config import TopicConfigurations
        from momento.config.transport.topic_transport_strategy import (
            StaticTopicGrpcConfiguration,
            StaticTopicTransportStrategy,
        )

        backend = self._backend
        provider = backend._provider(await backend._credentials())
        # The deadline bounds a subscription's whole stream; publishes are bounded by the
        # channel. Keepalive pings stay on (the SDK's default): they are what tells a dead
        # subscription from a quiet one.
        configuration = TopicConfigurations.Default(
            StaticTopicTransportStrategy(
                StaticTopicGrpcConfiguration(deadline=timedelta(seconds=SUBSCRIPTION_DEADLINE))
            )
        )
        try:
            return TopicClientAsync(configuration, provider)
        except Exception as exc:
            _fail("topic client setup", backend.cache_name, exc)

    def _received(self, sequence: int, page: int) -> None:
        self._resume_at, self._resume_page = sequence, page


class _TopicSubscription:
    """One live subscription to a `MomentoTopics` topic."""

    __slots__ = ("_response", "_stream", "_topics")

    def __init__(self, topics: MomentoTopics, response: Any, stream: Any) -> None:
        self._topics = topics
        self._response = response
        self._stream = stream

    async def receive(self) -> bytes | None:
        """The next message, or None for a heartbeat.

        Raises:
            BackendError: The subscription ended, or missed items (a discontinuity).
        """
        import grpc

        topics = self._topics
        try:
            item = await self._stream.read()
        except grpc.aio.AioRpcError as exc:
            raise BackendError(
                f"the Momento subscription to {topics.topic!r} ended: {exc.code().name}"
            ) from exc
        if item is grpc.aio.EOF:
            raise BackendError(f"the Momento subscription to {topics.topic!r} ended")
        kind = item.WhichOneof("kind")
        if kind == "item":
            topics._received(item.item.topic_sequence_number, item.item.sequence_page)
            value = item.item.value
            if value.WhichOneof("kind") == "binary":
                return bytes(value.binary)
            return str(value.text).encode("utf-8")
        if kind == "discontinuity":
            gap = item.discontinuity
            topics._received(gap.new_topic_sequence, gap.new_sequence_page)
            raise BackendError(f"the Momento subscription to {topics.topic!r} missed items")
        return None

    async def aclose(self) -> None:
        """End the subscription."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # Being cancelled: the loop is ending, or the channel closing, and the topic
            # client's close ends the stream with its channel. A stream cancelled on its own
            # here would leave an event in gRPC's queue for a loop about to close ("Event loop
            # is closed" on the next loop).
            return
        self._response.unsubscribe()


async def _close_topics(client: Any) -> None:
    await client.close()
    # gRPC delivers the closed streams' last events through this loop: let it, before the loop
    # closes, so that none is left for a closed loop ("Event loop is closed" on the next one).
    for _ in range(3):
        await asyncio.sleep(0.001)


async def _wait_until_ready(client: MomentoClient) -> None:
    """Open the client's data channels now, so that the first request does not pay for it.

    The SDK's own eager connection (`CacheClientAsync.create`) closes the channel when it
    fails, leaving the client unusable, and logs a warning; this only waits, and stops quietly
    at a failure, which the first request then reports. A client without these internals (a
    test double, another SDK version) connects on its first request instead.
    """
    import grpc

    waiting = (grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING)
    for data_client in getattr(client, "_data_clients", ()):
        channel = getattr(getattr(data_client, "_grpc_manager", None), "_channel", None)
        if not isinstance(channel, grpc.aio.Channel):
            continue
        state = channel.get_state(try_to_connect=True)
        while state in waiting:
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=False)


async def _bounded(operation: Callable[[K], Awaitable[T]], items: Sequence[K]) -> list[T]:
    """Run `operation` on each item concurrently, `BATCH_CONCURRENCY` at once; results in order.

    The first failure cancels the operations still running and is raised.
    """
    if not items:
        return []
    limit = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def run(item: K) -> T:
        async with limit:
            return await operation(item)

    tasks = [asyncio.ensure_future(run(item)) for item in items]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        # gather leaves the others running; the first failure (or a cancellation) ends them all.
        for task in tasks:
            task.cancel()
        raise


def _check_service_credentials(source: CredentialSource) -> None:
    """Fail at construction when the environment cannot reach the Momento service."""
    if isinstance(source, NoCredentials):
        raise ConfigurationError(_missing_credentials_message(None))
    if isinstance(source, EnvironmentCredentials) and source.credentials.endpoint is None:
        raise ConfigurationError(_missing_credentials_message(source.credentials))


def _missing_credentials_message(credentials: MomentoCredentials | None) -> str:
    if credentials is None:
        return (
            f"the momento:// backend needs an API key: set {API_KEY_VARIABLE} and "
            f"{ENDPOINT_VARIABLE}, or {SECRET_VARIABLE} to the name of a Secrets Manager secret "
            "holding the key (or give endpoint=host:port for a local Momento-protocol server)"
        )
    return (
        f"the Momento API key from {credentials.source} needs its endpoint: set "
        f"{ENDPOINT_VARIABLE} (for example cell-us-east-1-1.prod.a.momentohq.com)"
    )
