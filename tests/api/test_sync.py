"""cache.sync: the cache from sync code, on the environment's event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import polycache
from polycache import Backend, Cache, ConfigurationError, LoaderError, SourceNotFound
from tests.conftest import FakeClock
from tests.core.fakes import BytesBackend, CountingLoader

pytestmark = pytest.mark.usefixtures("environment_loop")


def test_every_operation_works_from_sync_code() -> None:
    cache = Cache()
    loader = CountingLoader()
    cache.register_loader("item", loader)
    assert cache.sync is cache.sync  # made once per cache

    cache.sync.set("plain", {"a": 1})
    assert cache.sync.get("plain") == {"a": 1}
    assert cache.sync.get("missing", "fallback") == "fallback"
    assert cache.sync.get("item:x") == "x#1"
    assert cache.sync.get_many(["item:x", "item:y", "plain"]) == {
        "item:x": "x#1",
        "item:y": "y#2",
        "plain": {"a": 1},
    }

    async def load() -> str:
        await asyncio.sleep(0)
        return "loaded"

    assert cache.sync.get_many(key for key in ("item:x", "item:z")) == {
        "item:x": "x#1",
        "item:z": "z#3",
    }
    assert cache.sync.get_or_load("other", load, ttl=5) == "loaded"
    assert cache.sync.get_or_load("other", load) == "loaded"
    assert cache.sync.refresh("item:x") == "x#4"
    cache.sync.delete("plain")
    assert cache.sync.get("plain") is None
    assert loader.calls == ["x", "y", "z", "x"]
    assert "SyncCache(Cache(" in repr(cache.sync)


def test_errors_are_those_of_the_async_operations() -> None:
    cache = Cache()
    loader = CountingLoader()
    loader.missing.add("gone")
    cache.register_loader("item", loader)

    async def not_found() -> str:
        raise SourceNotFound("nope")

    async def failing() -> str:
        raise RuntimeError("source is down")

    with pytest.raises(SourceNotFound):
        cache.sync.get_or_load("k", not_found)
    with pytest.raises(LoaderError, match="RuntimeError"):
        cache.sync.get_or_load("j", failing)
    assert cache.sync.get("item:gone", "default") == "default"
    with pytest.raises(ConfigurationError, match="non-empty str"):
        cache.sync.get("")
    with pytest.raises(ConfigurationError, match="no loader"):
        cache.sync.refresh("plain")


def test_calls_run_on_the_loop_lambda_handler_uses(
    environment_loop: asyncio.AbstractEventLoop,
) -> None:
    cache = Cache()
    loops: list[asyncio.AbstractEventLoop] = []

    async def load() -> str:
        loops.append(asyncio.get_running_loop())
        return "v"

    @polycache.lambda_handler
    async def handler(event: object, context: object) -> Any:
        loops.append(asyncio.get_running_loop())
        return await cache.get_or_load("h", load)

    cache.sync.get_or_load("s", load)
    handler({}, None)
    assert loops == [environment_loop] * 3


def test_a_background_refresh_continues_in_the_next_sync_call() -> None:
    clock = FakeClock()
    cache = Cache(ttl=1, stale_ttl=60, clock=clock)
    loader = CountingLoader(delay=0.02)
    cache.register_loader("item", loader)

    assert cache.sync.get("item:x") == "x#1"
    clock.advance(2)
    assert cache.sync.get("item:x") == "x#1"  # stale: a refresh starts; the loop stops
    time.sleep(0.05)  # the loop does not run: the refresh waits
    assert loader.calls == ["x", "x"]
    assert cache.sync.get("item:x") == "x#1"  # still stale; the refresh completes meanwhile
    assert cache.sync.get("item:x") == "x#2"
    assert cache.stats.loads == 2


def test_a_sync_set_wins_over_a_refresh_that_was_running() -> None:
    clock = FakeClock()
    cache = Cache(ttl=1, stale_ttl=60, clock=clock)
    loader = CountingLoader(delay=0.02)
    cache.register_loader("item", loader)

    cache.sync.get("item:x")
    clock.advance(2)
    assert cache.sync.get("item:x") == "x#1"  # stale: a refresh starts
    cache.sync.set("item:x", "manual")

    @polycache.lambda_handler
    async def handler(event: object, context: object) -> None:
        await asyncio.sleep(0.05)  # the refresh ends, and must not store over the set

    handler({}, None)
    assert loader.calls == ["x", "x"]
    assert cache.sync.get("item:x") == "manual"
    cache.sync.delete("item:x")
    assert cache.sync.get("item:x") == "x#3"


def test_a_background_refresh_continues_in_the_next_lambda_handler_invocation() -> None:
    clock = FakeClock()
    cache = Cache(ttl=1, stale_ttl=60, clock=clock)
    loader = CountingLoader(delay=0.02)
    cache.register_loader("item", loader)

    @polycache.lambda_handler
    async def handler(event: object, context: object) -> Any:
        await asyncio.sleep(0.05)
        return await cache.get("item:x")

    cache.sync.get("item:x")
    clock.advance(2)
    assert cache.sync.get("item:x") == "x#1"  # stale, refresh started
    assert handler({}, None) == "x#2"  # it finished on the same loop
    assert loader.calls == ["x", "x"]


def test_concurrent_misses_across_sync_and_async_share_one_load() -> None:
    cache = Cache()
    loader = CountingLoader(delay=0.02)
    cache.register_loader("item", loader)

    @polycache.lambda_handler
    async def handler(event: object, context: object) -> Any:
        # A sync call cannot join from inside; an async one shares the load a refresh started.
        refresh = asyncio.ensure_future(cache.refresh("item:x"))
        value = await cache.get("item:x")
        return value, await refresh

    assert handler({}, None) == ("x#1", "x#1")
    assert cache.sync.get("item:x") == "x#1"
    assert loader.calls == ["x"]


class AsyncOnALoop:
    """The operations cache.sync has, as the async ones run on a loop of their own."""

    def __init__(self, cache: Cache, loop: asyncio.AbstractEventLoop) -> None:
        self.cache = cache
        self.loop = loop

    def get(self, key: str, default: Any = None) -> Any:
        return self.loop.run_until_complete(self.cache.get(key, default))

    def get_or_load(self, key: str, loader: Any) -> Any:
        return self.loop.run_until_complete(self.cache.get_or_load(key, loader))

    def get_many(self, keys: list[str]) -> Any:
        return self.loop.run_until_complete(self.cache.get_many(keys))


def test_sync_and_async_calls_keep_the_same_counts() -> None:
    """Sync hits skip running the loop; their stats are exactly those of async calls."""

    async def not_found() -> str:
        raise SourceNotFound("none")

    def scenario(operations: Any, clock: FakeClock) -> list[Any]:
        results = [operations.get("item:a"), operations.get("item:a"), operations.get("plain")]
        clock.advance(2)
        results.append(operations.get("item:a"))  # stale, starts a refresh
        results.append(operations.get("item:a"))  # stale, the refresh is still running
        with pytest.raises(SourceNotFound):
            operations.get_or_load("neg", not_found)
        results.append(operations.get("neg", "default"))  # a remembered "not found"
        results.append(operations.get_many(["item:a", "item:b"]))
        return results

    def make() -> tuple[Cache, FakeClock]:
        clock = FakeClock()
        cache = Cache(ttl=1, stale_ttl=60, clock=clock)
        cache.register_loader("item", CountingLoader(delay=0.01))
        return cache, clock

    async_cache, async_clock = make()
    loop = asyncio.new_event_loop()
    try:
        expected = scenario(AsyncOnALoop(async_cache, loop), async_clock)
    finally:
        loop.close()
    sync_cache, sync_clock = make()
    assert scenario(sync_cache.sync, sync_clock) == expected
    assert sync_cache.stats == async_cache.stats
    assert (sync_cache.stats.hits, sync_cache.stats.stale_hits) == (2, 3)


def test_a_remote_backend_works_through_the_loop() -> None:
    backend = BytesBackend()
    cache = Cache(backend)
    cache.sync.set("k", "v")
    assert cache.sync.get("k") == "v"
    assert ("get", "k") in backend.calls
    cache.sync.delete("k")
    assert cache.sync.get("k") is None


@pytest.fixture(
    params=[
        pytest.param("extension", marks=pytest.mark.extension),
        pytest.param("momento", marks=pytest.mark.momento),
    ]
)
def remote_backend(request: pytest.FixtureRequest) -> Backend:
    backend: Backend = request.getfixturevalue(f"{request.param}_backend")
    return backend


def test_the_real_remote_backends_work_from_sync_code(remote_backend: Backend) -> None:
    cache = Cache(remote_backend)

    async def load() -> dict[str, int]:
        return {"n": 1}

    # The first operation in a process builds the client (and imports the SDK) inside the
    # backend timeout; on a loaded machine it may be slow. The operations after it are checked.
    cache.sync.get("sync:warm-up")
    errors = cache.stats.backend_errors
    cache.sync.set("sync:k", "v")
    assert cache.sync.get("sync:k") == "v"
    assert cache.sync.get_or_load("sync:loaded", load) == {"n": 1}
    assert cache.sync.get_many(["sync:k", "sync:loaded", "sync:none"]) == {
        "sync:k": "v",
        "sync:loaded": {"n": 1},
        "sync:none": None,
    }
    cache.sync.delete("sync:k")
    assert cache.sync.get("sync:k", "gone") == "gone"
    assert cache.stats.backend_errors == errors


# -- refusals, never a deadlock ---------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_a_call_inside_a_running_loop_is_refused() -> None:
    cache = Cache()
    await cache.set("k", 1)
    with pytest.raises(ConfigurationError, match=r"use await cache\.get\(\.\.\.\)"):
        cache.sync.get("k")
    with pytest.raises(ConfigurationError, match=r"use await cache\.set\(\.\.\.\)"):
        cache.sync.set("k", 2)
    assert await cache.get("k") == 1


@pytest.mark.timeout(10)
def test_a_call_from_inside_lambda_handlers_loop_is_refused() -> None:
    cache = Cache()

    @polycache.lambda_handler
    async def handler(event: object, context: object) -> Any:
        return cache.sync.get("k")

    with pytest.raises(ConfigurationError, match="running in an event loop"):
        handler({}, None)


@pytest.mark.timeout(10)
def test_a_second_thread_is_refused_while_one_runs_the_loop() -> None:
    cache = Cache()
    started = threading.Event()
    errors: list[BaseException] = []

    async def slow() -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "slow"

    def first() -> None:
        try:
            assert cache.sync.get_or_load("slow", slow) == "slow"
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(5)
    with pytest.raises(ConfigurationError, match="second thread"):
        cache.sync.get("other")
    thread.join(5)
    assert errors == []
    assert cache.sync.get("slow") == "slow"  # the loop is free again


@pytest.mark.timeout(10)
def test_a_call_while_another_thread_runs_the_loop_is_refused(
    environment_loop: asyncio.AbstractEventLoop,
) -> None:
    cache = Cache()
    started = threading.Event()

    async def busy() -> None:
        started.set()
        await asyncio.sleep(0.3)

    thread = threading.Thread(target=environment_loop.run_until_complete, args=(busy(),))
    thread.start()
    assert started.wait(5)
    with pytest.raises(ConfigurationError, match="second thread"):
        cache.sync.get("k")
    thread.join(5)


@pytest.mark.timeout(10)
def test_a_loader_offloading_to_a_thread_that_calls_sync_fails_rather_than_hangs() -> None:
    cache = Cache()
    cache.sync.set("inner", 1)

    def blocking_helper(key: str) -> Any:
        return cache.sync.get(key)

    async def load_cached() -> Any:
        return await asyncio.to_thread(blocking_helper, "inner")

    async def load_missing() -> Any:
        return await asyncio.to_thread(blocking_helper, "never-set")

    # A fresh hit needs no loop: the helper thread has it at once.
    assert cache.sync.get_or_load("outer", load_cached) == 1
    # Anything else would need the loop its caller holds: it is told so at once.
    with pytest.raises(ConfigurationError, match="second thread"):
        cache.sync.get_or_load("outer-2", load_missing)


def test_worker_threads_of_a_sync_program_may_call_one_at_a_time() -> None:
    cache = Cache()
    cache.sync.set("k", "v")
    results: list[Any] = []
    for _ in range(3):
        thread = threading.Thread(target=lambda: results.append(cache.sync.get("k")))
        thread.start()
        thread.join(5)
    assert results == ["v", "v", "v"]
