"""A backend call never hangs past `backend_timeout`, whatever the server does.

Servers here accept and never answer, or answer half a response and die; the cache must fail
open within its timeout, and with `fail_open=False` raise `BackendTimeout`/`BackendError`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from polycache import BackendError, Cache

TIMEOUT = 0.3


class RawServer:
    """A TCP server on 127.0.0.1 whose every connection is handled by `behave(connection)`."""

    def __init__(self, behave: Callable[[socket.socket], None]) -> None:
        self._behave = behave
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # so that close() is noticed without a connection
        self.port = self._listener.getsockname()[1]
        self._connections: list[socket.socket] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped:
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(None)
            self._connections.append(connection)
            threading.Thread(target=self._behave, args=(connection,), daemon=True).start()

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        for connection in self._connections:
            connection.close()
        self._thread.join(2)


def _never_answer(connection: socket.socket) -> None:
    try:
        while connection.recv(65536):
            pass
    except OSError:
        pass


def _half_an_answer(connection: socket.socket) -> None:
    try:
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        connection.close()
    except OSError:
        pass


@pytest.fixture(params=[_never_answer, _half_an_answer], ids=["never-answers", "dies-mid-answer"])
def hostile(request: pytest.FixtureRequest) -> Iterator[RawServer]:
    server = RawServer(request.param)
    yield server
    server.close()


URLS = {"extension": "extension://127.0.0.1:{port}"}


@pytest.mark.parametrize("scheme", sorted(URLS))
async def test_fail_open_within_the_backend_timeout(hostile: RawServer, scheme: str) -> None:
    cache = Cache(URLS[scheme].format(port=hostile.port), backend_timeout=TIMEOUT)

    async def load() -> str:
        return "from the source"

    started = time.perf_counter()
    assert await cache.get("k") is None
    assert time.perf_counter() - started < TIMEOUT * 2
    started = time.perf_counter()
    assert await cache.get_or_load("k2", load) == "from the source"
    assert time.perf_counter() - started < TIMEOUT * 2
    await cache.aclose()


@pytest.mark.parametrize("scheme", sorted(URLS))
async def test_fail_closed_raises_within_the_backend_timeout(
    hostile: RawServer, scheme: str
) -> None:
    cache = Cache(URLS[scheme].format(port=hostile.port), backend_timeout=TIMEOUT, fail_open=False)
    started = time.perf_counter()
    with pytest.raises(BackendError):
        await cache.get("k")
    assert time.perf_counter() - started < TIMEOUT * 2
    await cache.aclose()
