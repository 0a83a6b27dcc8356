"""The `extension://` backend: entries kept by the polycache Lambda extension, over local HTTP.

Every runtime in a Lambda execution environment can reach the extension, so a value cached by
one process (or one `asyncio.run`) is there for the next. Each entry travels as its value bytes,
with its freshness in `X-Polycache-*` headers, so that stale-while-revalidate works across
processes.

httpx is imported on first use: `import polycache` stays cheap on a cold start.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from polycache import _extension_wire as wire
from polycache._contracts import Entry
from polycache._errors import BackendError, BackendTimeout, ConfigurationError
from polycache._extras import require_extra
from polycache._loop_bound import LoopBound
from polycache._registry import parse_options, positive_int, seconds, split_url

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_MAX_ITEM_BYTES", "DEFAULT_PORT", "DEFAULT_TIMEOUT", "ExtensionBackend"]

DEFAULT_PORT: Final = wire.DEFAULT_PORT
"""The extension's default port (`POLYCACHE_EXTENSION_PORT`)."""

DEFAULT_TIMEOUT: Final = 0.5
"""Seconds one request to the extension may take."""

DEFAULT_MAX_ITEM_BYTES: Final = wire.DEFAULT_MAX_ITEM_BYTES
"""The extension's default limit per value (`POLYCACHE_EXTENSION_MAX_ITEM_BYTES`)."""

_HOSTS: Final = frozenset({"127.0.0.1", "localhost"})

# The extension is plain HTTP on loopback: no TLS handshake ever happens. httpx would otherwise
# build a verifying context (loading every CA certificate, ~20 ms) for each client, that is for
# each event loop, which `asyncio.run()` per invocation pays every time. One context without
# certificates, made once, is shared by every client; it verifies, so it could never trust.
_no_tls: ssl.SSLContext | None = None


def _loopback_ssl_context() -> ssl.SSLContext:
    global _no_tls
    if _no_tls is None:
        _no_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return _no_tls


class ExtensionBackend:
    """Stores entries in the polycache Lambda extension, on this machine's loopback.

    One `httpx.AsyncClient` with keep-alive connections is made per event loop, on first use.
    A request that cannot connect (the extension is still starting, or gone) fails at once
    with `BackendError`, which a fail-open `Cache` treats as a miss.

    Args:
        host: `127.0.0.1` or `localhost`; the extension serves nothing else.
        port: The extension's port.
        timeout: Seconds one request may take (connect, write and read each).
        max_item_bytes: The extension's limit per value; larger values are refused before
            they are sent.
        token: Sent as `X-Aws-Parameters-Secrets-Token`, which the extension checks against
            its `AWS_SESSION_TOKEN`; `from_url` takes it from `AWS_SESSION_TOKEN`.
        transport: An `httpx.AsyncBaseTransport` to use instead of the network (tests).

    Example:
        ```python
        cache = Cache("extension://127.0.0.1:4000?timeout=0.2")
        ```
    """

    stores_objects = False

    __slots__ = ("_client", "_token", "_transport", "host", "max_item_bytes", "port", "timeout")

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
        token: str | None = None,
        transport: Any = None,
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
        if transport is None:
            require_extra("the extension:// backend", "extension", "httpx")
        self.host = host
        self.port = port
        self.timeout = float(timeout)
        self.max_item_bytes: int | None = max_item_bytes
        self._token = token or None
        self._transport = transport
        self._client: LoopBound[httpx.AsyncClient] = LoopBound(self._create_client, _close_client)

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
        if response.status_code == 404:
            return None
        self._check(response, "get", key)
        value = wire.value_from_wire(response.headers.get("Content-Type"), response.content)
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
        response = await self._send("PUT", key, content=body, headers=headers)
        self._check(response, "set", key)

    async def delete(self, key: str) -> None:
        """Forget `key`."""
        response = await self._send("DELETE", key)
        if response.status_code != 404:
            self._check(response, "delete", key)

    async def aclose(self) -> None:
        """Close this loop's connections; the next call opens new ones."""
        await self._client.aclose()

    async def _create_client(self) -> httpx.AsyncClient:
        import httpx

        headers = {wire.TOKEN_HEADER: self._token} if self._token else {}
        return httpx.AsyncClient(
            base_url=f"http://{self.host}:{self.port}",
            headers=headers,
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            # Proxies from the environment must never see loopback traffic.
            trust_env=False,
            verify=_loopback_ssl_context(),
            transport=self._transport,
        )

    async def _send(
        self,
        method: str,
        key: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        # The one place where httpx's errors become polycache's.
        import httpx

        try:
            path = wire.KV_PATH + wire.encode_key(key)
        except ValueError as exc:
            raise ConfigurationError(
                f"the extension:// backend cannot take key {key!r}: {exc}"
            ) from None
        client = self._client.current or await self._client.get()
        for attempt in (1, 2):
            try:
                return await client.request(method, path, content=content, headers=headers)
            except httpx.TimeoutException as exc:
                raise BackendTimeout(
                    f"the extension at {self.host}:{self.port} did not answer a {method} of "
                    f"{key!r} within {self.timeout} s"
                ) from exc
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                # A kept-alive connection the extension closed meanwhile: one fresh try.
                if attempt == 1:
                    continue
                raise BackendError(
                    f"the extension at {self.host}:{self.port} dropped a {method} of {key!r}: "
                    f"{type(exc).__name__}"
                ) from exc
            except httpx.HTTPError as exc:
                raise BackendError(
                    f"cannot reach the extension at {self.host}:{self.port} for a {method} of "
                    f"{key!r}: {type(exc).__name__}"
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _check(self, response: httpx.Response, operation: str, key: str) -> None:
        status = response.status_code
        if status < 300:
            return
        code = ""
        try:
            document = response.json()
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


def _entry(value: bytes, headers: Mapping[str, str], key: str) -> Entry:
    try:
        fresh_until = float(headers[wire.FRESH_UNTIL])
        stale_until = float(headers[wire.STALE_UNTIL])
        expires_at = float(headers[wire.EXPIRES_AT])
    except (KeyError, ValueError) as exc:
        raise BackendError(
            f"the extension answered the get of {key!r} without its freshness headers"
        ) from exc
    return Entry(
        value=value,
        fresh_until=fresh_until,
        stale_until=stale_until,
        expires_at=expires_at,
        validator=wire.validator_from_header(headers.get(wire.VALIDATOR)),
        negative=headers.get(wire.NEGATIVE) == "1",
    )


async def _close_client(client: httpx.AsyncClient) -> None:
    await client.aclose()
