"""The Momento backend: one Momento cache shared by every process, over the official async SDK.

`momento://CACHE_NAME[?options]`. The `momento` package (and grpc with it) is imported on first
use of the backend, never when polycache or this module is imported.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, NoReturn, Protocol

from polycache._contracts import Entry
from polycache._errors import BackendError, BackendTimeout, ConfigurationError, SerializationError
from polycache._loop_bound import LoopBound
from polycache._registry import boolean, parse_options, seconds, split_url
from polycache.backends._envelope import pack, unpack
from polycache.backends._momento_credentials import (
    API_KEY_VARIABLE,
    ENDPOINT_VARIABLE,
    SECRET_VARIABLE,
    CredentialSource,
    EnvironmentCredentials,
    MomentoCredentials,
    NoCredentials,
    credentials_from_environment,
)

if TYPE_CHECKING:
    from momento.auth import CredentialProvider
    from momento.config import Configuration

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_TTL",
    "MAX_ITEM_BYTES",
    "MAX_TTL",
    "ClientFactory",
    "MomentoBackend",
    "MomentoClient",
]

MAX_ITEM_BYTES: Final = 5 * 1024 * 1024
"""Momento's limit for one item: key and stored bytes together."""
MAX_TTL: Final = 24 * 60 * 60.0
"""Momento keeps an item at most 24 hours."""
DEFAULT_TTL: Final = 300.0
DEFAULT_REQUEST_TIMEOUT: Final = 1.1
# Room kept out of the value budget for the key and the envelope's header, so that a value the
# Cache accepts fits in one Momento item with a key of up to about a kilobyte.
_ITEM_RESERVE: Final = 1024
LAMBDA_VARIABLE: Final = "AWS_LAMBDA_FUNCTION_NAME"


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

    async def create_cache(self, cache_name: str) -> Any:
        """Return a `CreateCache` response."""
        ...

    async def __aexit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None: ...


ClientFactory = Callable[["Configuration", "CredentialProvider", timedelta], MomentoClient]
"""Builds a client; `momento.CacheClientAsync` by default (its constructor, which is lazy)."""


class _Responses:
    """The SDK's response classes, looked up once when the first client is built."""

    __slots__ = ("create_error", "delete_success", "get_hit", "get_miss", "set_success")

    def __init__(self) -> None:
        from momento.responses import CacheDelete, CacheGet, CacheSet, CreateCache

        self.get_hit: type[Any] = CacheGet.Hit
        self.get_miss: type[Any] = CacheGet.Miss
        self.set_success: type[Any] = CacheSet.Success
        self.delete_success: type[Any] = CacheDelete.Success
        self.create_error: type[Any] = CreateCache.Error


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
    value, kept for the entry's own lifetime (at most 24 h). A client is built on first use in
    each event loop and reused; `aclose` releases it.

    Credentials come from `credentials`, or else the environment: `MOMENTO_API_KEY` with
    `MOMENTO_ENDPOINT` (the SDK's v2 provider), or `POLYCACHE_MOMENTO_API_KEY_SECRET` naming a
    Secrets Manager secret that holds the key, read once per process.

    Args:
        cache_name: The Momento cache.
        default_ttl: Seconds, the SDK client's default TTL; used for an entry that never expires.
        request_timeout: Seconds one attempt of a request may take (the SDK retries an
            unavailable server up to 3 times within the cache's `backend_timeout`).
        create_cache: Create the cache on first use if it does not exist.
        endpoint: `(host, port)` of a Momento-protocol server spoken to in plaintext (Momento
            Local, or a test server); None for the Momento service itself.
        credentials: Supplies the API key; defaults to the environment's choice.
        client_factory: Builds the SDK client; defaults to `momento.CacheClientAsync`.
        environ: The environment to read; defaults to `os.environ`.
        lambda_tuned: Use Momento's Lambda settings (no keepalive pings); defaults to whether
            `AWS_LAMBDA_FUNCTION_NAME` is set.
        clock: Returns the epoch time in seconds; injectable for tests.

    Raises:
        ConfigurationError: A bad argument, or credentials that are missing or malformed (named).
    """

    stores_objects = False
    max_item_bytes = MAX_ITEM_BYTES - _ITEM_RESERVE

    __slots__ = (
        "_cache_name",
        "_client_factory",
        "_clients",
        "_clock",
        "_create_cache",
        "_credentials",
        "_default_ttl",
        "_endpoint",
        "_lambda_tuned",
        "_request_timeout",
        "_responses",
    )

    def __init__(
        self,
        cache_name: str,
        *,
        default_ttl: float = DEFAULT_TTL,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        create_cache: bool = False,
        endpoint: tuple[str, int] | None = None,
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
        if not isinstance(request_timeout, int | float) or not 0 < request_timeout < math.inf:
            raise ConfigurationError(
                f"request_timeout must be a positive number of seconds, got {request_timeout!r}"
            )
        environment = os.environ if environ is None else environ
        source = (
            credentials if credentials is not None else credentials_from_environment(environment)
        )
        if endpoint is None:
            _check_service_credentials(source)
        self._cache_name = cache_name
        self._default_ttl = float(default_ttl)
        self._request_timeout = float(request_timeout)
        self._create_cache = bool(create_cache)
        self._endpoint = endpoint
        self._credentials = source
        self._client_factory = client_factory or _default_client_factory
        self._lambda_tuned = (
            LAMBDA_VARIABLE in environment if lambda_tuned is None else lambda_tuned
        )
        self._clock = clock
        self._responses: _Responses | None = None
        self._clients: LoopBound[MomentoClient] = LoopBound(self._connect, _close_client)

    @classmethod
    def from_url(cls, url: str) -> MomentoBackend:
        """Build from `momento://CACHE_NAME[?options]`.

        Options: `default_ttl` (seconds, at most 86400), `request_timeout` (seconds),
        `create_cache` (`true`/`false`), `endpoint` (`host:port` of a plaintext local server).
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
                "create_cache": boolean,
                "endpoint": _endpoint_option,
            },
        )
        default_ttl = options.get("default_ttl", DEFAULT_TTL)
        request_timeout = options.get("request_timeout", DEFAULT_REQUEST_TIMEOUT)
        create_cache = options.get("create_cache", False)
        endpoint = options.get("endpoint")
        assert isinstance(default_ttl, float)
        assert isinstance(request_timeout, float)
        assert isinstance(create_cache, bool)
        assert endpoint is None or isinstance(endpoint, tuple)
        return cls(
            parts.netloc,
            default_ttl=default_ttl,
            request_timeout=request_timeout,
            create_cache=create_cache,
            endpoint=endpoint,
        )

    def __repr__(self) -> str:
        endpoint = "momento" if self._endpoint is None else "{}:{}".format(*self._endpoint)
        return (
            f"MomentoBackend(cache_name={self._cache_name!r}, endpoint={endpoint!r}, "
            f"credentials={self._credentials!r}, request_timeout={self._request_timeout}, "
            f"lambda_tuned={self._lambda_tuned})"
        )

    @property
    def cache_name(self) -> str:
        """The Momento cache this backend stores in."""
        return self._cache_name

    async def get(self, key: str) -> Entry | None:
        """Return the entry under `key`, or None on a miss.

        Raises:
            BackendError: Momento failed (`BackendTimeout` if it timed out).
            SerializationError: The item was not written by polycache.
        """
        client = self._clients.current or await self._clients.get()
        response = await client.get(self._cache_name, key)
        responses = self._responses
        assert responses is not None
        if isinstance(response, responses.get_hit):
            entry = unpack(response.value_bytes)
            return None if entry.expires_at <= self._clock() else entry
        if isinstance(response, responses.get_miss):
            return None
        _fail("get", self._cache_name, response.inner_exception)

    async def set(self, key: str, entry: Entry) -> None:
        """Store `entry`, kept until its `expires_at` (at most 24 h); nothing is sent on an error.

        Raises:
            ConfigurationError: The entry would be fresh for more than 24 h.
            SerializationError: The item (key and stored bytes) is over Momento's 5 MiB.
            BackendError: Momento failed (`BackendTimeout` if it timed out).
        """
        now = self._clock()
        if entry.fresh_until - now > MAX_TTL:
            raise ConfigurationError(
                f"Momento keeps an item at most {MAX_TTL:.0f} s (24 h); the entry for {key!r} "
                f"is fresh for {entry.fresh_until - now:.0f} s: lower its ttl"
            )
        lifetime = entry.expires_at - now
        if lifetime == math.inf:
            lifetime = self._default_ttl
        elif lifetime <= 0:
            await self.delete(key)
            return
        # Momento may forget an item early (it is a cache); only freshness must fit in 24 h.
        lifetime = max(min(lifetime, MAX_TTL), 0.001)
        blob = pack(entry)
        size = len(key.encode("utf-8")) + len(blob)
        if size > MAX_ITEM_BYTES:
            raise SerializationError(
                f"the Momento item for {key!r} would be {size} bytes (key and entry), over "
                f"Momento's limit of {MAX_ITEM_BYTES} bytes"
            )
        client = self._clients.current or await self._clients.get()
        response = await client.set(self._cache_name, key, blob, timedelta(seconds=lifetime))
        responses = self._responses
        assert responses is not None
        if not isinstance(response, responses.set_success):
            _fail("set", self._cache_name, response.inner_exception)

    async def delete(self, key: str) -> None:
        """Forget `key`; a missing key is not an error.

        Raises:
            BackendError: Momento failed (`BackendTimeout` if it timed out).
        """
        client = self._clients.current or await self._clients.get()
        response = await client.delete(self._cache_name, key)
        responses = self._responses
        assert responses is not None
        if not isinstance(response, responses.delete_success):
            _fail("delete", self._cache_name, response.inner_exception)

    async def aclose(self) -> None:
        """Close this event loop's client; the next operation builds a new one."""
        await self._clients.aclose()

    async def _connect(self) -> MomentoClient:
        if self._responses is None:
            self._responses = _Responses()
        provider = self._provider(await self._credentials())
        configuration = build_configuration(self._request_timeout, lambda_tuned=self._lambda_tuned)
        try:
            client = self._client_factory(
                configuration, provider, timedelta(seconds=self._default_ttl)
            )
        except Exception as exc:
            _fail("client setup", self._cache_name, exc)
        if self._create_cache:
            try:
                response = await client.create_cache(self._cache_name)
                if isinstance(response, self._responses.create_error):
                    _fail("create_cache", self._cache_name, response.inner_exception)
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
