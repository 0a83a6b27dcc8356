"""The extension:// backend: URLs, errors, fail-open, and sharing entries across processes."""

from __future__ import annotations

import asyncio
import time

import pytest

from polycache import BackendError, BackendTimeout, Cache, ConfigurationError, Entry
from polycache.backends.extension import ExtensionBackend
from tests.stand_ins.extension_process import ExtensionProcess, free_port


def entry(value: bytes, ttl: float = 60.0) -> Entry:
    now = time.time()
    return Entry(value, now + ttl, now + ttl, now + ttl)


# -- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "timeout", "limit"),
    [
        ("extension://127.0.0.1:4000", "127.0.0.1", 4000, 0.5, 1024 * 1024),
        ("extension://localhost", "localhost", 4000, 0.5, 1024 * 1024),
        ("extension://127.0.0.1:2773/?timeout=0.2", "127.0.0.1", 2773, 0.2, 1024 * 1024),
        ("extension://127.0.0.1:4000?max_item_bytes=5000", "127.0.0.1", 4000, 0.5, 5000),
    ],
)
def test_from_url(url: str, host: str, port: int, timeout: float, limit: int) -> None:
    backend = ExtensionBackend.from_url(url)
    assert (backend.host, backend.port, backend.timeout, backend.max_item_bytes) == (
        host,
        port,
        timeout,
        limit,
    )
    assert backend.stores_objects is False


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("extension://10.0.0.1:4000", "127.0.0.1 or localhost"),
        ("extension://example.com", "127.0.0.1 or localhost"),
        ("extension://", "127.0.0.1 or localhost"),
        ("extension://127.0.0.1:99999", "port"),
        ("extension://127.0.0.1:port", "port"),
        ("extension://127.0.0.1:4000/cache", "no user, path"),
        ("extension://user:pw@127.0.0.1:4000", "no user, path"),
        ("extension://127.0.0.1:4000?timeout=0", "timeout"),
        ("extension://127.0.0.1:4000?timeout=soon", "timeout"),
        ("extension://127.0.0.1:4000?max_item_bytes=-1", "max_item_bytes"),
        ("extension://127.0.0.1:4000?colour=blue", "unknown option"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ExtensionBackend.from_url(url)


def test_cache_builds_it_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYCACHE_BACKEND", "extension://127.0.0.1:4321?timeout=0.1")
    cache = Cache.from_env()
    assert isinstance(cache.backend, ExtensionBackend)
    assert cache.backend.port == 4321


async def _header_seen_by_a_server(backend_url: str, environ: dict[str, str]) -> list[str]:
    """Start a one-shot HTTP server, send one get through `from_url`, return the token seen."""
    seen: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "x-aws-parameters-secrets-token":
                seen.append(value.strip())
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = ExtensionBackend.from_url(backend_url.format(port=port), environ=environ)
    try:
        assert await backend.get("k") is None
        assert environ.get("AWS_SESSION_TOKEN", "unset") not in repr(backend)
    finally:
        await backend.aclose()
        server.close()
        await server.wait_closed()
    return seen


async def test_from_url_takes_the_token_from_the_given_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "from-os-environ")
    environ = {"AWS_SESSION_TOKEN": "from-the-environment"}
    assert await _header_seen_by_a_server("extension://127.0.0.1:{port}", environ) == [
        "from-the-environment"
    ]
    assert await _header_seen_by_a_server("extension://127.0.0.1:{port}", {}) == []


# -- errors, translated in one place -------------------------------------------------------------


class Scripted:
    """A real HTTP server on 127.0.0.1 that answers each request with the next scripted bytes.

    An answer of None hangs; b"" closes the connection without answering.
    """

    def __init__(self, *answers: bytes | None) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[int, bytes]] = []  # (connection number, request head)
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> ExtensionBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.backend = ExtensionBackend(port=port, token="t", timeout=0.3)
        return self.backend

    async def __aexit__(self, *exc_info: object) -> None:
        await self.backend.aclose()
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                self.requests.append((number, head))
                answer = self.answers.pop(0)
                if answer is None:
                    await asyncio.Event().wait()
                if not answer:
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


async def test_error_statuses_become_backend_errors() -> None:
    body = b'{"error":"too_large","message":"x"}'
    answer = (
        b"HTTP/1.1 413 Too Large\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    async with Scripted(answer) as backend:
        with pytest.raises(BackendError, match=r"413 \(too_large\) to the set of 'k'"):
            await backend.set("k", entry(b"v"))


async def test_an_answer_without_freshness_is_a_backend_error() -> None:
    async with Scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nv") as backend:
        with pytest.raises(BackendError, match="freshness") as raised:
            await backend.get("k")
    assert isinstance(raised.value.__cause__, KeyError)


async def test_a_malformed_answer_is_a_backend_error() -> None:
    async with Scripted(b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n") as backend:
        with pytest.raises(BackendError, match="malformed answer"):
            await backend.get("k")


async def test_a_chunked_answer_is_read() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n"
        b"X-Polycache-Fresh-Until: 1e12\r\nX-Polycache-Stale-Until: 1e12\r\n"
        b"X-Polycache-Expires-At: 1e12\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    async with Scripted(answer) as backend:
        read = await backend.get("k")
    assert read is not None and read.value == b"sabcde"  # text/plain: the serializer's str tag


async def test_timeouts_become_backend_timeouts() -> None:
    started = time.monotonic()
    async with Scripted(None) as backend:
        with pytest.raises(BackendTimeout, match=r"within 0\.3 s") as raised:
            await backend.get("k")
    assert time.monotonic() - started < 1.0
    assert isinstance(raised.value.__cause__, TimeoutError)


async def test_a_dropped_keep_alive_connection_is_retried_once() -> None:
    # The first connection answers once, then is closed by the server as the second request
    # arrives (an idle timeout racing the request): the request goes out again on a new one.
    scripted = Scripted(NOT_FOUND, b"", NOT_FOUND)
    async with scripted as backend:
        assert await backend.get("a") is None
        assert await backend.get("b") is None
    assert [number for number, _ in scripted.requests] == [1, 1, 2]


async def test_every_request_carries_the_token_and_reuses_the_connection() -> None:
    scripted = Scripted(NOT_FOUND, NOT_FOUND, NOT_FOUND)
    async with scripted as backend:
        for key in ("a", "b", "c"):
            assert await backend.get(key) is None
    assert [number for number, _ in scripted.requests] == [1, 1, 1]
    assert all(
        b"\r\nX-Aws-Parameters-Secrets-Token: t\r\n" in head for _, head in scripted.requests
    )


async def test_concurrent_requests_share_at_most_64_connections() -> None:
    scripted = Scripted(*[NOT_FOUND] * 300)
    async with scripted as backend:
        results = await asyncio.gather(*(backend.get(f"k{number}") for number in range(300)))
    assert results == [None] * 300
    assert 1 <= scripted.connections <= 64


def test_a_token_that_would_break_the_header_is_refused_unquoted() -> None:
    with pytest.raises(ConfigurationError, match="printable ASCII") as raised:
        ExtensionBackend(token="abc\r\nX-Injected: 1")
    assert "Injected" not in str(raised.value)


async def test_non_bytes_values_are_refused() -> None:
    async with Scripted() as backend:
        with pytest.raises(BackendError, match="stores bytes"):
            await backend.set("k", entry("text"))  # type: ignore[arg-type]


# -- fail-open against a real port ---------------------------------------------------------------


async def test_no_extension_fails_fast_with_backend_error() -> None:
    backend = ExtensionBackend(port=free_port())
    started = time.monotonic()
    with pytest.raises(BackendError, match="cannot reach the extension") as raised:
        await backend.get("k")
    assert time.monotonic() - started < 0.5
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)
    await backend.aclose()


async def test_the_cache_fails_open_when_the_extension_is_down() -> None:
    cache = Cache(ExtensionBackend(port=free_port()))
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        return "from the source"

    started = time.monotonic()
    assert await cache.get_or_load("k", load) == "from the source"
    assert await cache.get_or_load("k", load) == "from the source"
    assert time.monotonic() - started < 0.5
    assert calls == 2
    assert cache.stats.backend_errors >= 2
    await cache.aclose()


async def test_the_cache_starts_using_the_extension_once_it_is_up() -> None:
    port = free_port()
    backend = ExtensionBackend(port=port, token="t")
    cache = Cache(backend)
    assert await cache.get("early") is None
    with ExtensionProcess({"AWS_SESSION_TOKEN": "t"}, port=port):
        await cache.set("late", {"value": 1})
        assert await cache.get("late") == {"value": 1}
    # Gone again: a miss, not an error.
    assert await cache.get("late") is None
    await cache.aclose()


async def test_the_cache_fails_closed_when_asked() -> None:
    cache = Cache(ExtensionBackend(port=free_port()), fail_open=False)
    with pytest.raises(BackendError):
        await cache.get("k")


# -- sharing through the extension --------------------------------------------------------------


async def test_stale_while_revalidate_across_processes(
    extension_backend: ExtensionBackend, extension_process: ExtensionProcess
) -> None:
    writer = Cache(extension_backend, ttl=0.2, stale_ttl=60)
    # As another process would: its own backend, its own connections.
    reader = Cache(ExtensionBackend(port=extension_process.port, token=extension_process.token))
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        return f"value {calls}"

    assert await writer.get_or_load("shared", load, ttl=0.2, stale_ttl=60) == "value 1"
    await asyncio.sleep(0.3)
    # Stale for everyone: answered at once, while one refresh runs.
    assert await reader.get_or_load("shared", load, ttl=0.2, stale_ttl=60) == "value 1"
    assert reader.stats.stale_hits == 1
    await asyncio.sleep(0.1)
    assert await writer.get("shared") == "value 2"
    assert calls == 2
    await reader.aclose()


def test_a_new_event_loop_gets_a_new_client(extension_process: ExtensionProcess) -> None:
    extension_process.clear()
    backend = ExtensionBackend(port=extension_process.port, token=extension_process.token)
    cache = Cache(backend)
    # asyncio.run per invocation: a client of the previous loop must not be reused.
    asyncio.run(cache.set("k", "v"))
    assert asyncio.run(cache.get("k")) == "v"
    assert asyncio.run(cache.get("k")) == "v"
