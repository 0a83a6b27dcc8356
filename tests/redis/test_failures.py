"""Fail-open within backend_timeout when Redis is paused, killed, refusing, or drops connections."""

from __future__ import annotations

import time

import pytest

from polycache import BackendError, BackendTimeout, Cache
from polycache.backends.redis import RedisBackend
from tests.stand_ins.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

TIMEOUT = 0.3
SLACK = 0.25  # scheduling on a loaded 2-core machine


async def load() -> str:
    return "from the loader"


async def test_paused_server_fails_open_within_backend_timeout(own_redis: RedisServer) -> None:
    cache = Cache(own_redis.url, backend_timeout=TIMEOUT)
    strict = Cache(own_redis.url, backend_timeout=TIMEOUT, fail_open=False)
    await cache.set("k", "stored")
    assert await strict.get("k") == "stored"
    own_redis.pause()
    try:
        for _ in range(3):  # the pooled connection, then new ones the kernel still accepts
            started = time.perf_counter()
            assert await cache.get_or_load("other", load) == "from the loader"
            assert time.perf_counter() - started < 2 * TIMEOUT + SLACK  # one read, one write
            started = time.perf_counter()
            with pytest.raises(BackendTimeout):
                await strict.get("k")
            assert time.perf_counter() - started < TIMEOUT + SLACK
        assert cache.stats.backend_errors >= 3
    finally:
        own_redis.resume()
    assert await strict.get("k") == "stored"  # and it recovers once the server does
    await cache.aclose()
    await strict.aclose()


async def test_paused_server_bounds_a_bare_backend_by_socket_timeout(
    own_redis: RedisServer,
) -> None:
    backend = RedisBackend.from_url(f"{own_redis.url}?socket_timeout=0.2", environ={})
    assert await backend.get("k") is None
    own_redis.pause()
    try:
        started = time.perf_counter()
        with pytest.raises(BackendTimeout, match=r"Redis GET on 127\.0\.0\.1:\d+ failed"):
            await backend.get("k")
        assert time.perf_counter() - started < 2 * 0.2 + SLACK  # one attempt and one retry
    finally:
        own_redis.resume()
    await backend.aclose()


async def test_killed_server_fails_open_fast(own_redis: RedisServer) -> None:
    cache = Cache(own_redis.url, backend_timeout=1)
    strict = Cache(own_redis.url, backend_timeout=1, fail_open=False)
    await cache.set("k", "stored")
    assert await strict.get("k") == "stored"
    own_redis.kill()
    started = time.perf_counter()
    assert await cache.get_or_load("k", load) == "from the loader"
    with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{own_redis.port}") as caught:
        await strict.get("k")
    assert not isinstance(caught.value, BackendTimeout)
    assert time.perf_counter() - started < 0.5  # refused at once, not waited out
    await cache.aclose()
    await strict.aclose()


async def test_refused_connections_fail_open_fast() -> None:
    port = free_port()
    cache = Cache(f"redis://127.0.0.1:{port}", backend_timeout=1)
    started = time.perf_counter()
    for _ in range(5):
        assert await cache.get_or_load("k", load) == "from the loader"
    assert time.perf_counter() - started < 0.5
    assert cache.stats.backend_errors >= 5
    strict = Cache(f"redis://127.0.0.1:{port}", fail_open=False)
    with pytest.raises(BackendError, match=r"[Cc]onnect|refused"):
        await strict.set("k", "v")
    await cache.aclose()
    await strict.aclose()


async def test_connections_the_server_dropped_heal_without_an_error(
    own_redis: RedisServer,
) -> None:
    # As after a Lambda environment was frozen past the server's idle timeout.
    cache = Cache(f"{own_redis.url}?max_connections=4", fail_open=False)
    await cache.set("k", "stored")
    own_redis.client().client_kill_filter(_type="normal", skipme=False)
    assert await cache.get("k") == "stored"
    assert cache.stats.backend_errors == 0
    await cache.aclose()


async def test_server_restarted_on_the_same_port_is_used_again(own_redis: RedisServer) -> None:
    cache = Cache(own_redis.url, backend_timeout=1)
    await cache.set("k", "before")
    own_redis.kill()
    assert await cache.get("k", "missed") == "missed"
    restarted = RedisServer(port=own_redis.port).start()
    try:
        await cache.set("k", "after")
        assert await cache.get("k") == "after"
    finally:
        restarted.stop()
        await cache.aclose()
