"""Round 2 of the core: no key can wedge, and misuse is named at the call that made it."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from typing import Any

import pytest

import polycache
from polycache import Cache, ConfigurationError, LoaderError, SourceNotFound
from tests.conftest import FakeClock
from tests.core.fakes import BatchCountingLoader, BytesBackend, CountingLoader


class HangingLoader:
    """Never returns on its first `hangs` calls (a socket read without a timeout)."""

    def __init__(self, hangs: int = 1) -> None:
        self.hangs = hangs
        self.calls = 0
        self.cancelled = 0

    async def __call__(self, name: str) -> str:
        self.calls += 1
        if self.calls <= self.hangs:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return f"{name}@{self.calls}"


# -- load_timeout --------------------------------------------------------------------------


async def test_a_hung_loader_times_out_and_the_next_caller_loads_afresh() -> None:
    cache = Cache(load_timeout=0.05)
    loader = HangingLoader()
    cache.register_loader("item", loader)
    waiters = [asyncio.ensure_future(cache.get("item:x")) for _ in range(3)]
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    for outcome in outcomes:
        assert isinstance(outcome, LoaderError)
        assert outcome.key == "item:x"
        assert isinstance(outcome.__cause__, TimeoutError)
        assert "load_timeout" in str(outcome)
    assert loader.cancelled == 1
    assert await cache.get("item:x") == "x@2"  # a fresh load, not the stuck one
    assert cache.stats.load_timeouts == 1
    assert cache.stats.load_errors == 1


async def test_a_timed_out_load_serves_the_stale_value_where_stale_if_error_allows(
    clock: FakeClock,
) -> None:
    cache = Cache(ttl=1, stale_if_error=60, load_timeout=0.05, clock=clock)
    loader = HangingLoader(hangs=0)
    cache.register_loader("item", loader)
    assert await cache.get("item:x") == "x@1"
    loader.hangs = 2  # the next load hangs
    clock.advance(2)
    assert await cache.get("item:x") == "x@1"  # expired, the load timed out, the old value stands
    assert cache.stats.load_timeouts == 1


async def test_load_timeout_none_disables_the_limit() -> None:
    cache = Cache(load_timeout=None)
    assert cache.settings.load_timeout is None
    loader = HangingLoader()
    cache.register_loader("item", loader)
    task = asyncio.ensure_future(cache.get("item:x"))
    await asyncio.sleep(0.1)
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await cache.aclose()


def test_load_timeout_comes_from_the_environment() -> None:
    assert Cache(environ={}).settings.load_timeout == 30.0
    assert Cache(environ={"POLYCACHE_LOAD_TIMEOUT": "2.5"}).settings.load_timeout == 2.5
    assert Cache(environ={"POLYCACHE_LOAD_TIMEOUT": "none"}).settings.load_timeout is None
    assert Cache(load_timeout=4, environ={"POLYCACHE_LOAD_TIMEOUT": "2"}).settings.load_timeout == 4
    with pytest.raises(ConfigurationError, match="POLYCACHE_LOAD_TIMEOUT"):
        Cache(environ={"POLYCACHE_LOAD_TIMEOUT": "soon"})
    with pytest.raises(ConfigurationError, match="load_timeout"):
        Cache(load_timeout=0)


async def test_refresh_after_delete_never_joins_the_superseded_load() -> None:
    cache = Cache(load_timeout=None)
    loader = HangingLoader()
    cache.register_loader("item", loader)
    stuck = asyncio.ensure_future(cache.get("item:x"))
    await asyncio.sleep(0.01)
    await cache.delete("item:x")
    assert await asyncio.wait_for(cache.refresh("item:x"), 1) == "x@2"
    assert await asyncio.wait_for(cache.get("item:x"), 1) == "x@2"
    stuck.cancel()
    await asyncio.gather(stuck, return_exceptions=True)
    await cache.aclose()


async def test_a_get_after_set_never_joins_the_superseded_load() -> None:
    cache = Cache(load_timeout=None)
    loader = HangingLoader()
    cache.register_loader("item", loader)
    stuck = asyncio.ensure_future(cache.get("item:x"))
    await asyncio.sleep(0.01)
    await cache.set("item:x", "written")
    assert await asyncio.wait_for(cache.get("item:x"), 1) == "written"
    await cache.delete("item:x")
    assert await asyncio.wait_for(cache.get("item:x"), 1) == "x@2"
    await cache.aclose()
    await asyncio.gather(stuck, return_exceptions=True)
    assert stuck.cancelled()


async def test_a_batch_that_hangs_times_out_too() -> None:
    class HangingBatch(BatchCountingLoader):
        async def load_many(self, names: Any) -> Any:
            await asyncio.Event().wait()

    cache = Cache(load_timeout=0.05)
    cache.register_loader("item", HangingBatch())
    results = await cache.get_many(["item:a", "item:b"], return_exceptions=True)
    for key in ("item:a", "item:b"):
        assert isinstance(results[key], LoaderError)
        assert results[key].key == key
    assert await cache.get("item:a") == "a#1"  # the single-key path, not the stuck batch


# -- misuse is named at the call ------------------------------------------------------------


def test_a_plain_def_loader_is_refused_at_registration() -> None:
    cache = Cache()

    def load(name: str) -> str:
        return name

    with pytest.raises(ConfigurationError, match="async def"):
        cache.register_loader("item", load)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="async def"):
        cache.loader("item")(load)  # type: ignore[type-var]


async def test_a_sync_lambda_to_get_or_load_is_a_configuration_error_even_with_a_stale_value(
    clock: FakeClock,
) -> None:
    cache = Cache(ttl=1, stale_if_error=600, clock=clock)

    async def load() -> int:
        return 1

    assert await cache.get_or_load("k", load) == 1
    clock.advance(2)
    with pytest.raises(ConfigurationError, match="not an awaitable"):
        await cache.get_or_load("k", lambda: 5)  # type: ignore[arg-type, return-value]
    assert cache.stats.load_errors == 0


async def test_a_lambda_returning_a_coroutine_is_a_fine_loader() -> None:
    cache = Cache()

    async def build(n: int) -> int:
        return n * 2

    assert await cache.get_or_load("k", lambda: build(21)) == 42


@pytest.mark.parametrize("keys", ["abc", b"abc", 42, None])
async def test_get_many_refuses_what_is_not_a_list_of_keys(keys: Any) -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError, match="iterable of keys"):
        await cache.get_many(keys)


async def test_get_many_names_a_bad_key() -> None:
    with pytest.raises(ConfigurationError, match="must be a str"):
        await Cache().get_many(["ok", 3])  # type: ignore[list-item]


# -- errors name the key the loader was registered under ------------------------------------


async def test_a_loader_error_carries_the_key_of_the_scheme_it_was_registered_under() -> None:
    class SsmLike:
        async def __call__(self, name: str) -> str:
            raise LoaderError(f"SSM parameter {name!r}: access denied", key=f"ssm:{name}")

    cache = Cache()
    cache.register_loader("config", SsmLike())
    with pytest.raises(LoaderError) as caught:
        await cache.get("config:/a/b")
    assert caught.value.key == "config:/a/b"


# -- settings reach the backend --------------------------------------------------------------


def test_environ_reaches_a_backend_factory_that_takes_it() -> None:
    seen: list[Any] = []

    def factory(url: str, *, environ: Any = None) -> BytesBackend:
        seen.append(environ.get("TOKEN_FOR_TEST"))
        return BytesBackend()

    polycache.register_backend("envtest", factory)
    Cache("envtest://x", environ={"TOKEN_FOR_TEST": "from-argument"})
    assert seen == ["from-argument"]


# -- get_many's hit path ---------------------------------------------------------------------


def test_get_many_of_cached_keys_answers_without_suspending() -> None:
    cache = Cache(ttl=60)
    for key in "abc":
        cache.backend.records[key] = (key.upper(), time.time() + 60, 0, time.time() + 60)  # type: ignore[attr-defined]
    coroutine = cache.get_many(["a", "b", "c"])
    with pytest.raises(StopIteration) as done:
        coroutine.send(None)
    assert done.value.value == {"a": "A", "b": "B", "c": "C"}
    assert cache.stats.hits == 3


async def test_get_many_mixes_inline_hits_with_loads_in_key_order() -> None:
    cache = Cache(ttl=60)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    await cache.set("plain", 1)
    assert await cache.get_many(["item:a", "plain", "missing"]) == {
        "item:a": "a#1",
        "plain": 1,
        "missing": None,
    }
    assert list(await cache.get_many(["item:a", "plain", "missing"])) == [
        "item:a",
        "plain",
        "missing",
    ]


# -- a miss against a hung backend costs one timeout -----------------------------------------


async def test_a_key_whose_read_just_timed_out_is_not_read_again_at_once() -> None:
    backend = BytesBackend()
    backend.hang_seconds = 10
    cache = Cache(backend, backend_timeout=0.05)
    cache.register_loader("item", CountingLoader())
    started = time.perf_counter()
    assert await cache.refresh("item:x") == "x#1"  # one timed-out read, then the load
    assert await cache.refresh("item:x") == "x#2"  # the read is skipped: no second timeout
    assert time.perf_counter() - started < 0.095
    await cache.aclose()


# -- lambda_handler ---------------------------------------------------------------------------


async def test_lambda_handler_inside_a_running_loop_is_a_clear_error() -> None:
    @polycache.lambda_handler
    async def handler(event: Any, context: Any) -> int:
        return 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ConfigurationError, match="__wrapped__"):
            handler({}, None)
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert await handler.__wrapped__({}, None) == 1  # type: ignore[attr-defined]


def test_lambda_handler_from_a_second_thread_at_once_is_a_clear_error() -> None:
    started = threading.Event()
    release = threading.Event()

    @polycache.lambda_handler
    async def slow(event: Any, context: Any) -> str:
        started.set()
        await asyncio.to_thread(release.wait, 5)
        return "done"

    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(slow({}, None)))
    thread.start()
    assert started.wait(5)
    try:
        with pytest.raises(ConfigurationError, match="second thread"):
            slow({}, None)
    finally:
        release.set()
        thread.join(5)
    assert results == ["done"]


def test_lambda_handler_prefetches_at_decoration_and_never_fails_the_init() -> None:
    cache = Cache(ttl=60)
    loader = CountingLoader()
    loader.missing.add("gone")
    cache.register_loader("item", loader)

    class Broken:
        async def __call__(self, name: str) -> str:
            raise RuntimeError("source down")

    cache.register_loader("broken", Broken())

    @polycache.lambda_handler(cache=cache, prefetch=["item:a", "item:gone", "broken:b"])
    async def handler(event: Any, context: Any) -> Any:
        return await cache.get("item:a")

    assert loader.calls == ["a", "gone"]  # at decoration, the INIT phase
    assert handler({}, None) == "a#1"
    assert cache.stats.hits >= 1
    assert loader.calls == ["a", "gone"]


def test_lambda_handler_prefetch_needs_a_cache_and_a_list() -> None:
    with pytest.raises(ConfigurationError, match="cache="):
        polycache.lambda_handler(prefetch=["ssm:/a"])
    with pytest.raises(ConfigurationError, match="list of keys"):
        polycache.lambda_handler(cache=Cache(), prefetch="ssm:/a")


async def test_prefetch_returns_the_failures_and_loads_the_rest() -> None:
    cache = Cache(ttl=60)
    loader = CountingLoader()
    cache.register_loader("item", loader)

    class Broken:
        async def __call__(self, name: str) -> str:
            raise RuntimeError("source down")

    cache.register_loader("broken", Broken())
    failures = await cache.prefetch(["item:a", "broken:b"], jitter=0.01)
    assert list(failures) == ["broken:b"]
    assert isinstance(failures["broken:b"], LoaderError)
    assert await cache.get("item:a") == "a#1"


async def test_source_not_found_still_raises_from_get_or_load() -> None:
    cache = Cache()

    async def missing() -> str:
        raise SourceNotFound("nope")

    with pytest.raises(SourceNotFound):
        await cache.get_or_load("k", missing)


async def test_keys_in_polycaches_own_namespace_are_refused() -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError, match="keeps for its own entries"):
        await cache.get("__polycache_tag__:users")
    with pytest.raises(ConfigurationError, match="keeps for its own entries"):
        await cache.get_many(["ok", "__polycache_lease__:k"])
