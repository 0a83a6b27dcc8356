"""The Redis and Valkey backend: one shared store for every process, over redis-py's asyncio client.

`redis://[[user]:password@]host[:port][/db][?options]`, `rediss://` for TLS, `valkey://` and
`valkeys://` likewise, `?cluster=1` for cluster mode (ElastiCache cluster mode, Serverless,
MemoryDB). redis-py is imported when the backend is built, never when polycache or this module
is imported.

The backend takes leases (`LeaseBackend.add`: `SET ... PX ... NX`) and carries near-caches'
invalidations over pub/sub (`PushBackend`, through `RedisPubSub`).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from polycache._contracts import Entry
from polycache._errors import BackendError, BackendTimeout, ConfigurationError
from polycache._extras import require_extra
from polycache._loop_bound import LoopBound
from polycache._registry import boolean, parse_options, positive_int, seconds, split_url
from polycache.backends._envelope import pack, unpack
from polycache.backends._lease import lease_arguments
from polycache.backends._redis_credentials import (
    SECRET_VARIABLE,
    CredentialSource,
    IamCredentials,
    PasswordCredentials,
    SecretPasswordCredentials,
    is_serverless_host,
)

if TYPE_CHECKING:
    from urllib.parse import SplitResult

    from redis.credentials import CredentialProvider

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PORT",
    "DEFAULT_SOCKET_TIMEOUT",
    "MAX_ITEM_BYTES",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "RedisBackend",
    "RedisPubSub",
]

T = TypeVar("T")

logger = logging.getLogger("polycache")

DEFAULT_PORT: Final = 6379
DEFAULT_KEY_PREFIX: Final = "polycache:"
DEFAULT_MAX_CONNECTIONS: Final = 50
DEFAULT_SOCKET_TIMEOUT: Final = 1.0
MAX_ITEM_BYTES: Final = 32 * 1024 * 1024
"""The largest value stored: Redis takes up to 512 MB, a Lambda function's memory far less."""
_TLS_SCHEMES: Final = frozenset({"rediss", "valkeys"})
_SCHEMES: Final = frozenset({"redis", "valkey"}) | _TLS_SCHEMES
_SCAN_COUNT: Final = 1000
CHANNEL_SUFFIX: Final = "invalidations"
PING_INTERVAL: Final = 5.0
"""Seconds a subscription may be quiet before it sends a `PING` to prove the server is there."""
PING_TIMEOUT: Final = 2.0
"""Seconds the server may take to answer that `PING` before the subscription counts as dead."""
# How often a quiet subscription returns a heartbeat (None), so that the PING clock is checked.
_TICK: Final = 1.0
_SUBSCRIBE_TIMEOUT: Final = 5.0
_GLOB_SPECIAL: Final = str.maketrans({character: f"\\{character}" for character in "*?[]\\"})


def _fail(operation: str, where: str, error: BaseException) -> BackendError:
    """Translate a redis-py error: the one place this backend's vendor errors become ours.

    redis-py's messages name the server and the failure, never the password (it is sent
    through a `CredentialProvider`, so it is in no connection's arguments either).
    """
    from redis.exceptions import TimeoutError as RedisTimeout

    message = f"Redis {operation} on {where} failed: {type(error).__name__}: {error}"
    if isinstance(error, RedisTimeout | TimeoutError):
        return BackendTimeout(message)
    return BackendError(message)


@functools.cache
def _errors() -> tuple[type[BaseException], ...]:
    """What redis-py raises (its own errors, and OSError from a socket it did not wrap)."""
    from redis.exceptions import RedisError

    return (RedisError, OSError)


@functools.cache
def _provider_class() -> Callable[[CredentialSource], CredentialProvider]:
    from redis.credentials import CredentialProvider

    class SourceProvider(CredentialProvider):
        """Hands redis-py the credentials of each new connection from a polycache source."""

        def __init__(self, source: CredentialSource) -> None:
            self.source = source

        def get_credentials(self) -> tuple[str] | tuple[str, str]:
            raise NotImplementedError("the asyncio client asks get_credentials_async")

        async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
            credentials = await self.source()
            if credentials.username:
                return credentials.username, credentials.password
            return (credentials.password,)

    return SourceProvider


def _key_prefix_option(raw: str) -> str:
    if not raw:
        raise ValueError("expected a non-empty prefix (clear() forgets only keys under it)")
    return raw


def _ssl_ca_option(raw: str) -> str:
    if not os.path.isfile(raw) or not os.access(raw, os.R_OK):
        raise ValueError("expected the path of a readable PEM file of CA certificates")
    return raw


def _name_option(raw: str) -> str:
    if not raw.strip():
        raise ValueError("expected a non-empty name")
    return raw.strip()


def _timeout_option(raw: str) -> float:
    value = seconds(raw)
    if value <= 0:
        raise ValueError("expected seconds greater than 0")
    return value


_OPTIONS: Final[Mapping[str, Callable[[str], object]]] = {
    "cache_name": _name_option,
    "cluster": boolean,
    "iam": boolean,
    "key_prefix": _key_prefix_option,
    "max_connections": positive_int,
    "region": _name_option,
    "socket_timeout": _timeout_option,
    "reply_timeout": _timeout_option,
    "ssl_ca": _ssl_ca_option,
}


class RedisBackend:
    """Stores entries in Redis or Valkey, so that every process using the server sees them.

    Each entry is one string key (`key_prefix` + the cache key) holding the envelope (freshness
    and validator) and the serialized value, written with `SET ... PX` so that the server forgets
    it at the entry's `expires_at`. `get_many` is one `MGET` (in cluster mode one `MGET` per hash
    slot, pipelined to each node), `set_many` one pipeline of `SET ... PX`, deletes are `UNLINK`,
    and `clear` removes only the keys under `key_prefix`.

    A client (with its connection pool) is built on first use in each event loop and closed when
    that loop shuts down, so a handler run with `asyncio.run` per invocation keeps working.

    Args:
        host: The server, or in cluster mode any node of the cluster.
        port: Its port.
        db: The database number (standalone servers only).
        tls: Speak TLS, verifying the server's certificate.
        ssl_ca: A PEM file of CA certificates to verify the server with, instead of the system's.
        key_prefix: Put before every key; `clear` forgets only keys under it.
        max_connections: The most operations at once per event loop, and so the most
            connections (per node in cluster mode); callers beyond wait their turn.
        cluster: The server is a Redis Cluster (or ElastiCache with cluster mode, or Serverless).
        socket_timeout: Seconds one connect may take. A reply is bounded by the `Cache`'s
            `backend_timeout`, which bounds each whole operation; a caller beyond
            `max_connections` waits for a running operation to finish.
        reply_timeout: Seconds one reply may take, checked in the socket as well: for a
            backend used without a `Cache`. Off by default: redis-py runs each reply with a
            timeout in a task of its own, which costs about a fifth of a local GET.
        credentials: Supplies the user name and password of each connection; none by default.
        clock: Returns the epoch time in seconds; injectable for tests.

    Raises:
        ConfigurationError: A bad argument, or redis-py is not installed.
    """

    stores_objects = False
    max_item_bytes = MAX_ITEM_BYTES

    __slots__ = (
        "_clients",
        "_clock",
        "_cluster",
        "_credentials",
        "_db",
        "_host",
        "_max_connections",
        "_port",
        "_prefix",
        "_reply_timeout",
        "_socket_timeout",
        "_ssl_ca",
        "_tls",
        "_where",
    )

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        db: int = 0,
        tls: bool = False,
        ssl_ca: str | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        cluster: bool = False,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        reply_timeout: float | None = None,
        credentials: CredentialSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        require_extra("the redis:// backend", "redis", "redis")
        if not isinstance(host, str) or not host:
            raise ConfigurationError(f"Redis host must be a non-empty str, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError(f"Redis port must be an int from 1 to 65535, got {port!r}")
        if isinstance(db, bool) or not isinstance(db, int) or db < 0:
            raise ConfigurationError(f"Redis db must be an int of at least 0, got {db!r}")
        if cluster and db:
            raise ConfigurationError(f"a Redis Cluster has only database 0, got db={db}")
        if ssl_ca is not None and not tls:
            raise ConfigurationError(
                "ssl_ca verifies a TLS server: use rediss:// (or valkeys://), or drop ssl_ca"
            )
        if not isinstance(key_prefix, str) or not key_prefix:
            raise ConfigurationError(f"key_prefix must be a non-empty str, got {key_prefix!r}")
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or max_connections <= 0
        ):
            raise ConfigurationError(
                f"max_connections must be an int greater than 0, got {max_connections!r}"
            )
        if (
            isinstance(socket_timeout, bool)
            or not isinstance(socket_timeout, int | float)
            or not 0 < socket_timeout < math.inf
        ):
            raise ConfigurationError(
                f"socket_timeout must be a positive number of seconds, got {socket_timeout!r}"
            )
        self._host = host
        self._port = port
        self._db = db
        self._tls = bool(tls)
        self._ssl_ca = ssl_ca
        self._prefix = key_prefix
        self._max_connections = max_connections
        self._cluster = bool(cluster)
        self._socket_timeout = float(socket_timeout)
        if reply_timeout is not None and (
            isinstance(reply_timeout, bool)
            or not isinstance(reply_timeout, int | float)
            or not 0 < reply_timeout < math.inf
        ):
            raise ConfigurationError(
                f"reply_timeout must be a positive number of seconds, got {reply_timeout!r}"
            )
        self._reply_timeout = None if reply_timeout is None else float(reply_timeout)
        self._credentials = credentials
        self._clock = clock
        self._where = f"{host}:{port}"
        # Imported here, at construction (a Lambda function's init phase), so that the first
        # operation pays only for its connection inside backend_timeout.
        self._client_class()
        self._clients: LoopBound[_Connection] = LoopBound(self._connect, _close)

    @classmethod
    def from_url(cls, url: str, *, environ: Mapping[str, str] | None = None) -> RedisBackend:
        """Build from `redis://[[user]:password@]host[:port][/db][?options]`.

        Schemes: `redis`, `valkey` (plaintext), `rediss`, `valkeys` (TLS). Options: `cluster`
        (`1`: cluster mode), `key_prefix` (default `polycache:`), `max_connections`,
        `socket_timeout` (seconds), `ssl_ca` (a PEM file), `iam` (`1`: ElastiCache IAM
        authentication as the URL's user, with `cache_name` and optionally `region`).

        `POLYCACHE_REDIS_PASSWORD_SECRET` in `environ` names a Secrets Manager secret holding
        the password, read once per process.

        Args:
            url: The URL.
            environ: The environment to read; defaults to `os.environ`.

        Raises:
            ConfigurationError: A malformed URL, an unknown or bad option, or conflicting
                credentials, named.
        """
        environment = os.environ if environ is None else environ
        parts = split_url(url)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ConfigurationError(
                f"Redis backend URL {url!r} must start with redis://, rediss://, valkey:// "
                "or valkeys://"
            )
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            raise ConfigurationError(
                f"Redis backend URL {_redacted(url)!r} has a malformed port: expected 1-65535"
            ) from None
        if not host:
            raise ConfigurationError(
                f"Redis backend URL {_redacted(url)!r} names no host: expected "
                "'redis://host:6379/0'"
            )
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ConfigurationError(
                f"Redis backend URL {_redacted(url)!r} has the path {parts.path!r}: expected "
                "a database number such as /0"
            )
        # Redacted: parse_options quotes the URL in its errors.
        options = parse_options(_redacted(url), _OPTIONS) if parts.query else {}
        credentials = _credentials(scheme, parts, host, options, environment, url)
        ssl_ca = options.get("ssl_ca")
        key_prefix = options.get("key_prefix", DEFAULT_KEY_PREFIX)
        max_connections = options.get("max_connections", DEFAULT_MAX_CONNECTIONS)
        socket_timeout = options.get("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
        reply_timeout = options.get("reply_timeout")
        cluster = options.get("cluster", False)
        assert ssl_ca is None or isinstance(ssl_ca, str)
        assert isinstance(key_prefix, str)
        assert isinstance(max_connections, int)
        assert isinstance(socket_timeout, float)
        assert reply_timeout is None or isinstance(reply_timeout, float)
        assert isinstance(cluster, bool)
        return cls(
            host,
            DEFAULT_PORT if port is None else port,
            db=int(path or 0),
            tls=scheme in _TLS_SCHEMES,
            ssl_ca=ssl_ca,
            key_prefix=key_prefix,
            max_connections=max_connections,
            cluster=cluster,
            socket_timeout=socket_timeout,
            reply_timeout=reply_timeout,
            credentials=credentials,
        )

    def __repr__(self) -> str:
        return (
            f"RedisBackend(host={self._host!r}, port={self._port}, db={self._db}, "
            f"tls={self._tls}, cluster={self._cluster}, key_prefix={self._prefix!r}, "
            f"credentials={self._credentials!r})"
        )

    @property
    def key_prefix(self) -> str:
        """What every key is stored under."""
        return self._prefix

    async def get(self, key: str) -> Entry | None:
        """Return the entry under `key`, or None on a miss.

        Raises:
            BackendError: Redis failed (`BackendTimeout` if it timed out).
            SerializationError: The stored bytes were not written by polycache.
        """
        # Written out rather than through _call: this is the hit path.
        try:
            connection = self._clients.current or await self._clients.get()
            async with connection.gate:
                data = await connection.client.get(self._prefix + key)
        except _errors() as exc:
            raise _fail("GET", self._where, exc) from exc
        if data is None:
            return None
        entry = unpack(data)
        return None if entry.expires_at <= self._clock() else entry

    async def set(self, key: str, entry: Entry) -> None:
        """Store `entry`, for the server to forget at its `expires_at` (`SET ... PX`).

        Raises:
            BackendError: Redis failed (`BackendTimeout` if it timed out).
            SerializationError: The entry's value is not bytes.
        """
        data = pack(entry)
        milliseconds = self._milliseconds(entry)
        name = self._prefix + key
        if milliseconds is None:
            await self._call("SET", lambda client: client.set(name, data))
        elif milliseconds > 0:
            await self._call("SET", lambda client: client.set(name, data, px=milliseconds))
        else:
            await self._call("UNLINK", lambda client: client.unlink(name))

    async def delete(self, key: str) -> None:
        """Forget `key` (`UNLINK`); a missing key is not an error.

        Raises:
            BackendError: Redis failed (`BackendTimeout` if it timed out).
        """
        name = self._prefix + key
        await self._call("UNLINK", lambda client: client.unlink(name))

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store `value` under `key` for `ttl` seconds only if `key` holds nothing (a lease).

        One `SET ... PX ... NX`: of all the processes adding the same key, one gets True. The
        key is under `key_prefix`, as for `get`, `set` and `delete`, so `delete(key)` forgets
        it; the value is stored as given, not as an entry.

        Returns:
            True if this call stored it, False if the key was already there.

        Raises:
            ConfigurationError: `key` is empty, `value` is not bytes, or `ttl` is not a
                positive duration.
            BackendError: Redis failed (`BackendTimeout` if it timed out).
        """
        milliseconds = max(1, math.ceil(lease_arguments(key, value, ttl) * 1000))
        name = self._prefix + key
        stored = await self._call(
            "SET NX", lambda client: client.set(name, value, px=milliseconds, nx=True)
        )
        return bool(stored)

    def push_transport(self) -> RedisPubSub:
        """Pub/sub on `{key_prefix}invalidations`, for near-caches' invalidations."""
        return RedisPubSub(self)

    async def cleared_elsewhere(self) -> None:
        """Nothing to catch up with: `clear` deletes the keys, it does not move to new ones."""

    async def get_many(self, keys: Sequence[str]) -> Sequence[Entry | None]:
        """Return the entries under `keys`, in order, with one `MGET` (one per slot in a cluster).

        Raises:
            BackendError: Redis failed (`BackendTimeout` if it timed out).
            SerializationError: Stored bytes were not written by polycache.
        """
        if not keys:
            return []
        prefix = self._prefix
        names = [prefix + key for key in keys]
        if self._cluster:
            # MGET per hash slot, pipelined to each node: never a CROSSSLOT error.
            values = await self._call("MGET", lambda client: client.mget_nonatomic(names))
        else:
            values = await self._call("MGET", lambda client: client.mget(names))
        now = self._clock()
        entries: list[Entry | None] = []
        for data in values:
            entry = None if data is None else unpack(data)
            entries.append(None if entry is None or entry.expires_at <= now else entry)
        return entries

    async def set_many(self, entries: Mapping[str, Entry]) -> None:
        """Store each entry until its own `expires_at`, in one pipeline of `SET ... PX`.

        Raises:
            BackendError: Redis failed (`BackendTimeout` if it timed out).
            SerializationError: An entry's value is not bytes (nothing is sent).
        """
        if not entries:
            return
        prefix = self._prefix
        commands = [
            (prefix + key, pack(entry), self._milliseconds(entry)) for key, entry in entries.items()
        ]

        async def write(client: Any) -> None:
            pipeline = client.pipeline(transaction=False)
            for name, data, milliseconds in commands:
                if milliseconds is None:
                    pipeline.set(name, data)
                elif milliseconds > 0:
                    pipeline.set(name, data, px=milliseconds)
                else:
                    pipeline.unlink(name)
            await pipeline.execute()

        await self._call("SET pipeline", write)

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Forget every key in `keys` (`UNLINK`, one per slot in a cluster).

        Raises:
            BackendError: Redis failed (`BackendTimeout` if it timed out).
        """
        if keys:
            names = [self._prefix + key for key in keys]
            await self._call("UNLINK", lambda client: client.unlink(*names))

    async def clear(self) -> None:
        """Forget every key under `key_prefix` (`SCAN MATCH` + `UNLINK`, on every primary).

        Keys that other applications keep on the same server are left alone.

        Raises:
            BackendError: Redis failed (`BackendTimeout` if it timed out).
        """
        pattern = self._prefix.translate(_GLOB_SPECIAL) + "*"

        async def forget(client: Any) -> None:
            batch: list[bytes] = []
            async for name in client.scan_iter(match=pattern, count=_SCAN_COUNT):
                batch.append(name)
                if len(batch) >= _SCAN_COUNT:
                    await client.unlink(*batch)
                    batch.clear()
            if batch:
                await client.unlink(*batch)

        await self._call("SCAN/UNLINK", forget)

    async def aclose(self) -> None:
        """Close this event loop's client; the next operation builds a new one."""
        await self._clients.aclose()

    async def _call(self, operation: str, function: Callable[[Any], Awaitable[T]]) -> T:
        """Run `function(client)` on this loop's client, its errors translated by `_fail`."""
        try:
            connection = self._clients.current or await self._clients.get()
            async with connection.gate:
                return await function(connection.client)
        except _errors() as exc:
            raise _fail(operation, self._where, exc) from exc

    def _milliseconds(self, entry: Entry) -> int | None:
        """The `PX` that ends at `entry.expires_at`; None for never, 0 or less for already."""
        if entry.expires_at == math.inf:
            return None
        return math.ceil((entry.expires_at - self._clock()) * 1000)

    def _client_class(self) -> type[Any]:
        if self._cluster:
            from redis.asyncio.cluster import RedisCluster

            return RedisCluster
        from redis.asyncio import Redis

        return Redis

    def _client_options(self, retries: int) -> dict[str, Any]:
        """The options of a redis-py client (or pool) on this backend's server."""
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options: dict[str, Any] = {
            "host": self._host,
            "port": self._port,
            "socket_timeout": self._reply_timeout,
            "socket_connect_timeout": self._socket_timeout,
            "retry": Retry(NoBackoff(), retries),
        }
        # No CLIENT SETINFO round trips on every new connection.
        if importlib.util.find_spec("redis.driver_info") is None:
            options.update(lib_name=None, lib_version=None)  # redis-py before 7.1
        else:
            options["driver_info"] = None
        if self._credentials is not None:
            options["credential_provider"] = _provider_class()(self._credentials)
        if self._tls:
            options.update(ssl=True, ssl_ca_certs=self._ssl_ca)
        return options

    async def _connect(self) -> _Connection:
        # One quick retry on a fresh connection: it heals a connection the server closed
        # while a Lambda environment was frozen, and a refused one still fails at once.
        options = self._client_options(retries=1)
        # redis-py's pools fail at once when their connections run out, and its blocking pool
        # costs ~10 us on every call. An operation uses at most one connection (per node), so
        # with this many at a time they never run out, and a caller beyond them waits for one
        # to finish (each bounded by socket_timeout).
        gate = asyncio.Semaphore(self._max_connections)
        options["max_connections"] = self._max_connections
        if not self._cluster:
            return _Connection(self._client_class()(db=self._db, **options), gate)
        client = self._client_class()(**options)
        try:
            # Learn the slot map once, before any caller shares the client: concurrent first
            # commands would each start initialize(), which drops connections others are using.
            await client.initialize()
        except BaseException:
            await client.aclose()
            raise
        return _Connection(client, gate)


class _Connection:
    """One event loop's client, and the gate that keeps its pools from running out."""

    __slots__ = ("client", "gate")

    def __init__(self, client: Any, gate: asyncio.Semaphore) -> None:
        self.client = client
        self.gate = gate


async def _close(connection: _Connection) -> None:
    await connection.client.aclose()


class RedisPubSub:
    """The push transport of a `RedisBackend`: `PUBLISH` and `SUBSCRIBE` on one channel.

    The channel is `{key_prefix}invalidations`. Each event loop gets a plain (not cluster)
    redis-py client of its own (`LoopBound`) on the backend's server, with the backend's TLS and
    credentials: one connection publishes, one per subscription listens. In cluster mode it
    talks to the node named in the URL: a Redis Cluster forwards every plain `PUBLISH` to every
    node, so one node's subscribers hear the writes of the whole cluster. Pub/sub ignores the
    database number: backends on different `db`s of one server share a channel unless their
    `key_prefix` differs.

    A quiet subscription sends a `PING` after `PING_INTERVAL` seconds and ends (so that the
    channel subscribes again) when no answer comes within `PING_TIMEOUT`: a connection that
    died while a Lambda environment was frozen is noticed rather than trusted.

    Args:
        backend: The backend whose server, key prefix, TLS and credentials are used.
    """

    __slots__ = ("_backend", "_clients", "channel")

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self.channel = backend.key_prefix + CHANNEL_SUFFIX
        self._clients: LoopBound[Any] = LoopBound(self._open, _close_client)

    def __repr__(self) -> str:
        return f"RedisPubSub({self._backend._where!r}, channel={self.channel!r})"

    def connected(self) -> bool:
        """True if this event loop has its pub/sub client already."""
        return self._clients.current is not None

    async def publish(self, message: bytes) -> None:
        """`PUBLISH` `message` on the channel.

        Raises:
            BackendError: Redis failed (`BackendTimeout` if it timed out).
        """
        where = self._backend._where
        try:
            client = self._clients.current or await self._clients.get()
            await client.publish(self.channel, message)
        except _errors() as exc:
            raise _fail("PUBLISH", where, exc) from exc

    async def subscribe(self) -> _Subscription:
        """`SUBSCRIBE` to the channel; returns once the server has confirmed it.

        Raises:
            BackendError: Redis failed, or did not confirm within 5 s (`BackendTimeout`).
        """
        where = self._backend._where
        pubsub: Any = None
        try:
            client = self._clients.current or await self._clients.get()
            pubsub = client.pubsub()
            await pubsub.subscribe(self.channel)
            deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT
            while (left := deadline - time.monotonic()) > 0:
                message = await pubsub.get_message(timeout=min(left, _TICK))
                if message is not None and message["type"] == "subscribe":
                    return _Subscription(pubsub, where)
        except BaseException as exc:
            if pubsub is not None:
                await _close_quietly(pubsub)
            if isinstance(exc, _errors()):
                raise _fail("SUBSCRIBE", where, exc) from exc
            raise
        await _close_quietly(pubsub)
        raise BackendTimeout(
            f"Redis SUBSCRIBE on {where}: no confirmation within {_SUBSCRIBE_TIMEOUT:g} s"
        )

    async def aclose(self) -> None:
        """Close this event loop's pub/sub client (and the subscriptions on it)."""
        await self._clients.aclose()

    async def _open(self) -> Any:
        from redis.asyncio import Redis

        backend = self._backend
        # No retries: redis-py's retry would reconnect a dropped subscription behind the
        # channel's back, which must see every drop (messages sent meanwhile are lost). The
        # channel retries publishes itself.
        options = backend._client_options(retries=0)
        return Redis(db=backend._db, **options)


class _Subscription:
    """One live subscription of a `RedisPubSub`, on its own connection."""

    __slots__ = ("_ended", "_heard_at", "_pinged_at", "_pubsub", "_where")

    def __init__(self, pubsub: Any, where: str) -> None:
        self._pubsub = pubsub
        self._where = where
        self._heard_at = time.monotonic()
        self._pinged_at: float | None = None
        self._ended = False

    async def receive(self) -> bytes | None:
        """The next message, or None for a heartbeat (about every second while quiet).

        Raises:
            BackendError: The connection dropped, the server ended the subscription, or it did
                not answer a `PING` within `PING_TIMEOUT` (`BackendTimeout`).
        """
        if self._ended:
            raise BackendError(f"the Redis subscription on {self._where} has ended")
        try:
            message = await self._pubsub.get_message(timeout=_TICK)
            quiet = time.monotonic() - self._heard_at
            if message is None and self._pinged_at is None and quiet >= PING_INTERVAL:
                self._pinged_at = time.monotonic()
                await self._pubsub.ping()
        except _errors() as exc:
            self._ended = True
            raise _fail("pub/sub read", self._where, exc) from exc
        except BaseException:
            self._ended = True
            raise
        if message is None:
            pinged_at = self._pinged_at
            if pinged_at is not None and time.monotonic() - pinged_at >= PING_TIMEOUT:
                self._ended = True
                raise BackendTimeout(
                    f"Redis on {self._where} did not answer a subscription's PING within "
                    f"{PING_TIMEOUT:g} s"
                )
            return None
        self._heard_at, self._pinged_at = time.monotonic(), None
        kind = message["type"]
        if kind == "message":
            return bytes(message["data"])
        if kind == "unsubscribe":
            self._ended = True
            raise BackendError(f"the Redis subscription on {self._where} was ended by the server")
        return None  # a PONG, or a confirmation

    async def aclose(self) -> None:
        """End the subscription and close its connection."""
        self._ended = True
        await _close_quietly(self._pubsub)


async def _close_quietly(pubsub: Any) -> None:
    try:
        await pubsub.aclose()
    except Exception as exc:  # the connection is going away anyway
        logger.debug("polycache: closing a Redis subscription failed: %r", exc)


async def _close_client(client: Any) -> None:
    await client.aclose()


def _redacted(url: str) -> str:
    """`url` with any password replaced by `***`, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url.strip())
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def _credentials(
    scheme: str,
    parts: SplitResult,
    host: str,
    options: Mapping[str, object],
    environ: Mapping[str, str],
    url: str,
) -> CredentialSource | None:
    """Choose where the password comes from: the URL, a secret, or IAM; reject a mix."""
    from urllib.parse import unquote

    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    secret_name = environ.get(SECRET_VARIABLE)
    where = f"in Redis backend URL {_redacted(url)!r}"
    if secret_name is not None and not secret_name.strip():
        raise ConfigurationError(
            f"{SECRET_VARIABLE} is set but empty; name the Secrets Manager secret that holds "
            "the Redis password"
        )
    if options.get("iam"):
        if password or secret_name:
            raise ConfigurationError(
                f"iam=1 {where} signs a token as the password: drop the password "
                f"{'and unset ' + SECRET_VARIABLE if secret_name else 'from the URL'}"
            )
        if not username:
            raise ConfigurationError(
                f"iam=1 {where} needs the ElastiCache user: 'rediss://USER@host:6379?iam=1"
                "&cache_name=NAME'"
            )
        if scheme not in _TLS_SCHEMES:
            raise ConfigurationError(
                f"iam=1 {where}: ElastiCache accepts IAM authentication over TLS only; use "
                "rediss:// or valkeys://"
            )
        cache_name = options.get("cache_name")
        if not isinstance(cache_name, str):
            raise ConfigurationError(
                f"iam=1 {where} needs cache_name=NAME (the replication group or serverless "
                "cache the token is signed for)"
            )
        region = (
            options.get("region") or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
        )
        if not isinstance(region, str) or not region.strip():
            raise ConfigurationError(
                f"iam=1 {where} needs the cache's region: set AWS_REGION or add region=NAME"
            )
        return IamCredentials(
            username,
            cache_name.lower(),
            region=region.strip(),
            environ=environ,
            serverless=is_serverless_host(host),
        )
    for name in ("cache_name", "region"):
        if name in options:
            raise ConfigurationError(f"{name} {where} is for iam=1 only; add iam=1 or drop it")
    if secret_name is not None:
        if password:
            raise ConfigurationError(
                f"both {SECRET_VARIABLE} and a password {where} give the password; keep one"
            )
        return SecretPasswordCredentials(secret_name.strip(), username=username)
    if password:
        return PasswordCredentials(username, password)
    if username:
        raise ConfigurationError(
            f"the user {username!r} {where} has no password: expected "
            f"'{scheme}://{username}:PASSWORD@{host}', or set {SECRET_VARIABLE}"
        )
    return None
