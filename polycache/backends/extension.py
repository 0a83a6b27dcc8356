"""The `extension://` backend: entries kept by the polycache Lambda extension, over local HTTP.

Every runtime in a Lambda execution environment can reach the extension, so a value cached by
one process (or one `asyncio.run`) is there for the next. Each entry travels as its raw value
bytes, its type in `Content-Type` and its freshness in `X-Polycache-*` headers (see
`polycache._extension_wire`), so that stale-while-revalidate works across processes and other
runtimes read and write the same entries.

The client is a small HTTP/1.1 keep-alive client on asyncio streams, for one server on loopback
that polycache itself runs: no dependency, nothing to build per event loop but a list of idle
connections, so that `asyncio.run()` per invocation costs a connection, not a TLS context and
a client stack (~20 ms with httpx's defaults, ~2 ms without them).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Final, NamedTuple

from polycache import _extension_wire as wire
from polycache._contracts import Entry
from polycache._errors import BackendError, BackendTimeout, ConfigurationError
from polycache._loop_bound import LoopBound
from polycache._registry import parse_options, positive_int, seconds, split_url
from polycache.backends._lease import lease_arguments

__all__ = ["DEFAULT_MAX_ITEM_BYTES", "DEFAULT_PORT", "DEFAULT_TIMEOUT", "ExtensionBackend"]

DEFAULT_PORT: Final = wire.DEFAULT_PORT
"""The extension's default port (`POLYCACHE_EXTENSION_PORT`)."""

DEFAULT_TIMEOUT: Final = 0.5
"""Seconds one request to the extension may take."""

DEFAULT_MAX_ITEM_BYTES: Final = wire.DEFAULT_MAX_ITEM_BYTES
"""The extension's default limit per value (`POLYCACHE_EXTENSION_MAX_ITEM_BYTES`)."""

_HOSTS: Final = frozenset({"127.0.0.1", "localhost"})
# Connections one event loop opens at most; more concurrent requests wait for one.
_MAX_CONNECTIONS: Final = 64
_NO_BODY: Final = frozenset({204, 304})


class _Response(NamedTuple):
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class _MalformedAnswer(Exception):  # noqa: N818 - internal, becomes BackendError
    """The extension's answer is not HTTP/1.1 as this client reads it."""


async def _read_response(reader: asyncio.StreamReader) -> tuple[_Response, bool]:
    """Read one answer; returns it and whether the connection may be used again."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    try:
        status = int(rest[:3])
    except ValueError:
        raise _MalformedAnswer("no status code") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    reusable = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if status in _NO_BODY or 100 <= status < 200:
        return _Response(status, headers, b""), reusable
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise _MalformedAnswer("a malformed Content-Length")
        return _Response(status, headers, await reader.readexactly(int(length))), reusable
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return _Response(status, headers, await _read_chunked(reader)), reusable
    # Neither: the body runs until the extension closes the connection.
    return _Response(status, headers, await reader.read()), False


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _MalformedAnswer("a malformed chunk size") from None
        if size == 0:
            # Trailers, if any, end with an empty line.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


class _LoopbackClient:
    """HTTP/1.1 with keep-alive to one address, for the event loop it was made on."""

    __slots__ = ("_fixed", "_host", "_idle", "_port", "_slots")

    def __init__(self, host: str, port: int, token: str | None) -> None:
        self._host = host
        self._port = port
        fixed = f"Host: {host}:{port}\r\n"
        if token:
            fixed += f"{wire.TOKEN_HEADER}: {token}\r\n"
        self._fixed = fixed
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(_MAX_CONNECTIONS)

    async def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> _Response:
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        data = (
            f"{method} {path} HTTP/1.1\r\n{self._fixed}{lines}Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + body
        async with self._slots:
            return await self._exchange(data)

    async def _exchange(self, data: bytes) -> _Response:
        while True:
            reused = False
            while self._idle:
                reader, writer = self._idle.pop()
                if not reader.at_eof() and not writer.is_closing():
                    reused = True
                    break
                writer.close()
            if not reused:
                reader, writer = await asyncio.open_connection(self._host, self._port)
            try:
                writer.write(data)
                response, reusable = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                # A kept-alive connection that the extension closed meanwhile: a new one.
                if reused:
                    continue
                raise
            except BaseException:
                # Cancelled or failed halfway: the connection's state is unknown.
                writer.close()
                raise
            if reusable:
                self._idle.append((reader, writer))
            else:
                writer.close()
            return response

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()


def _valid_token(token: str | None) -> str | None:
    if not token:
        return None
    if not token.isascii() or not token.isprintable() or token != token.strip():
        # Never quoted: it is a credential. A line break in it would end the header early.
        raise ConfigurationError(
            "the extension token (AWS_SESSION_TOKEN) must be printable ASCII without line breaks"
        )
    return token


class ExtensionBackend:
    """Stores entries in the polycache Lambda extension, on this machine's loopback.

    Keep-alive connections are kept per event loop, opened on first use. A request that cannot
    connect (the extension is still starting, or gone) fails at once with `BackendError`,
    which a fail-open `Cache` treats as a miss. No optional dependency is needed.

    Args:
        host: `127.0.0.1` or `localhost`; the extension serves nothing else.
        port: The extension's port.
        timeout: Seconds one request may take, connecting included.
        max_item_bytes: The extension's limit per value; larger values are refused before
            they are sent.
        token: Sent as `X-Aws-Parameters-Secrets-Token`, which the extension checks against
            its `AWS_SESSION_TOKEN`; `from_url` takes it from `AWS_SESSION_TOKEN`.

    Example:
        ```python
        cache = Cache("extension://127.0.0.1:4000?timeout=0.2")
        ```
    """

    stores_objects = False

    __slots__ = ("_client", "_token", "host", "max_item_bytes", "port", "timeout")

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
        token: str | None = None,
    ) -> None:
        if host not in _HOSTS:
            raise ConfigurationError(
                f"the extension backend connects to 127.0.0.1 or localhost only, got {host!r}"
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigurationError(f"port must be an int from 1 to 65535, got {port!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ConfigurationError(
                f"timeout must be a positive number of seconds, got {timeout!r}"
            )
        if (
            isinstance(max_item_bytes, bool)
            or not isinstance(max_item_bytes, int)
            or max_item_bytes <= 0
        ):
            raise ConfigurationError(
                f"max_item_bytes must be an int greater than 0, got {max_item_bytes!r}"
            )
        self.host = host
        self.port = port
        self.timeout = float(timeout)
        self.max_item_bytes: int | None = max_item_bytes
        self._token = _valid_token(token)
        self._client: LoopBound[_LoopbackClient] = LoopBound(self._create_client, _close_client)

    @classmethod
    def from_url(cls, url: str, *, environ: Mapping[str, str] | None = None) -> ExtensionBackend:
        """Build from `extension://127.0.0.1:4000[?timeout=0.5&max_item_bytes=1048576]`.

        Args:
            url: The backend URL.
            environ: Where `AWS_SESSION_TOKEN` is read from; defaults to `os.environ`.

        Raises:
            ConfigurationError: Another host, a bad port or path, or an unknown option.
        """
        parts = split_url(url)
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigurationError(
                f"extension backend URL {url!r} has a bad port: {exc}"
            ) from None
        host = parts.hostname or ""
        if parts.username or parts.password or parts.path not in ("", "/") or parts.fragment:
            raise ConfigurationError(
                f"extension backend URL {url!r}: expected 'extension://127.0.0.1:4000' "
                "(no user, path or fragment)"
            )
        if host not in _HOSTS:
            raise ConfigurationError(
                f"extension backend URL {url!r}: the extension serves on 127.0.0.1 or localhost "
                f"only, got host {host!r}"
            )
        options = parse_options(url, {"timeout": _positive_seconds, "max_item_bytes": positive_int})
        timeout = options.get("timeout", DEFAULT_TIMEOUT)
        max_item_bytes = options.get("max_item_bytes", DEFAULT_MAX_ITEM_BYTES)
        assert isinstance(timeout, float | int)
        assert isinstance(max_item_bytes, int)
        return cls(
            host,
            DEFAULT_PORT if port is None else port,
            timeout=timeout,
            max_item_bytes=max_item_bytes,
            token=(os.environ if environ is None else environ).get("AWS_SESSION_TOKEN"),
        )

    def __repr__(self) -> str:
        return (
            f"ExtensionBackend(host={self.host!r}, port={self.port}, timeout={self.timeout}, "
            f"max_item_bytes={self.max_item_bytes})"
        )

    async def get(self, key: str) -> Entry | None:
        """Return the entry under `key`, or None if the extension has none (or it expired)."""
        response = await self._send("GET", key)
        if response.status == 404:
            return None
        self._check(response, "get", key)
        value = wire.value_from_wire(response.headers.get("content-type"), response.body)
        return _entry(value, response.headers, key)

    async def set(self, key: str, entry: Entry) -> None:
        """Store `entry` (its value is bytes) until `entry.expires_at`."""
        value = entry.value
        if not isinstance(value, bytes | bytearray | memoryview):
            raise BackendError(
                f"the extension stores bytes, got {type(value).__name__} for {key!r}"
            )
        content_type, body = wire.value_to_wire(bytes(value))
        headers = wire.entry_headers(entry)
        headers["Content-Type"] = content_type
        response = await self._send("PUT", key, headers=headers, body=body)
        self._check(response, "set", key)

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        response = await self._send("DELETE", key)
        if response.status != 404:
            self._check(response, "delete", key)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store `value` under `key` for `ttl` seconds only if the extension holds nothing there.

        A conditional PUT (`If-None-Match: *`): the extension answers 204 when it stored the
        value, 412 when the key holds a live entry. `get` answers the bytes exactly as given;
        `delete` forgets them.

        Returns:
            True if this call stored it, False if the key was already there.

        Raises:
            ConfigurationError: `value` is not bytes, or `ttl` is not a positive duration.
            BackendError: The extension failed or could not be reached (a value over its
                `max_item_bytes` is refused with 413).
        """
        seconds = lease_arguments(key, value, ttl)
        headers = {
            "Content-Type": wire.OPAQUE_TYPE,
            "If-None-Match": "*",
            wire.EXPIRES_AT: repr(time.time() + seconds),
        }
        response = await self._send("PUT", key, headers=headers, body=value)
        if response.status == 412:
            return False
        self._check(response, "add", key)
        return True

    async def clear(self) -> None:
        """Forget every key/value entry of the extension (its whole store is polycache's)."""
        response = await self._send("DELETE", "", whole_store=True)
        self._check(response, "clear", "*")

    async def aclose(self) -> None:
        """Close this loop's connections; the next call opens new ones."""
        await self._client.aclose()

    async def _create_client(self) -> _LoopbackClient:
        return _LoopbackClient(self.host, self.port, self._token)

    async def _send(
        self,
        method: str,
        key: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        whole_store: bool = False,
    ) -> _Response:
        # The one place where connection errors become polycache's.
        try:
            path = wire.KV_PATH.rstrip("/") if whole_store else wire.KV_PATH + wire.encode_key(key)
        except ValueError as exc:
            raise ConfigurationError(
                f"the extension:// backend cannot take key {key[:64]!r}: {exc}"
            ) from None
        client = self._client.current or await self._client.get()
        where = f"the extension at {self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.timeout):
                return await client.request(method, path, headers or {}, body)
        except TimeoutError as exc:
            raise BackendTimeout(
                f"{where} did not answer a {method} of {key!r} within {self.timeout} s"
            ) from exc
        except ConnectionRefusedError as exc:
            raise BackendError(
                f"cannot reach {where} for a {method} of {key!r}: {type(exc).__name__}"
            ) from exc
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise BackendError(
                f"{where} dropped a {method} of {key!r}: {type(exc).__name__}"
            ) from exc
        except (_MalformedAnswer, asyncio.LimitOverrunError, ValueError) as exc:
            raise BackendError(
                f"{where} gave a malformed answer to a {method} of {key!r}: {exc}"
            ) from exc
        except OSError as exc:
            raise BackendError(
                f"cannot reach {where} for a {method} of {key!r}: {type(exc).__name__}"
            ) from exc

    def _check(self, response: _Response, operation: str, key: str) -> None:
        status = response.status
        if status < 300:
            return
        code = ""
        if response.headers.get("content-type", "").startswith("application/json"):
            import json  # only on an error answer

            try:
                document = json.loads(response.body)
                if isinstance(document, dict):
                    code = str(document.get("error", ""))
            except ValueError:
                pass
        detail = f" ({code})" if code else ""
        raise BackendError(f"the extension answered {status}{detail} to the {operation} of {key!r}")


def _positive_seconds(raw: str) -> float:
    value = seconds(raw)
    if value <= 0:
        raise ValueError("expected a positive number of seconds")
    return value


_FRESH_UNTIL: Final = wire.FRESH_UNTIL.lower()
_STALE_UNTIL: Final = wire.STALE_UNTIL.lower()
_EXPIRES_AT: Final = wire.EXPIRES_AT.lower()
_VALIDATOR: Final = wire.VALIDATOR.lower()
_NEGATIVE: Final = wire.NEGATIVE.lower()


def _entry(value: bytes, headers: Mapping[str, str], key: str) -> Entry:
    try:
        fresh_until = float(headers[_FRESH_UNTIL])
        stale_until = float(headers[_STALE_UNTIL])
        expires_at = float(headers[_EXPIRES_AT])
    except (KeyError, ValueError) as exc:
        raise BackendError(
            f"the extension answered the get of {key!r} without its freshness headers"
        ) from exc
    return Entry(
        value=value,
        fresh_until=fresh_until,
        stale_until=stale_until,
        expires_at=expires_at,
        validator=wire.validator_from_header(headers.get(_VALIDATOR)),
        negative=headers.get(_NEGATIVE) == "1",
    )


async def _close_client(client: _LoopbackClient) -> None:
    await client.aclose()
