"""Fresh, stale, expired; single-flight; stale-if-error; negative caching; fail-open."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import pytest

from polycache import (
    BackendError,
    BackendTimeout,
    Cache,
    ConfigurationError,
    Entry,
    LoaderError,
    SerializationError,
    SourceNotFound,
)
from polycache.backends.memory import MemoryBackend
from tests.conftest import FakeClock
from tests.core.fakes import BatchCountingLoader, BytesBackend, CountingLoader, VersionedLoader


def memory_cache(clock: FakeClock, **options: object) -> Cache:
    return Cache(MemoryBackend(clock=clock), clock=clock, **options)  # type: ignore[arg-type]


async def settle() -> None:
    """Let background refresh tasks run to completion."""
    for _ in range(5):
        await asyncio.sleep(0)


# -- fresh, stale, expired -------------------------------------------------------------------


async def test_fresh_entry_is_served_without_loading(clock: FakeClock) -> None:
    cache = memory_cache(clock, ttl=10)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    assert await cache.get("item:a") == "a#1"
    clock.advance(9.9)
    assert await cache.get("item:a") == "a#1"
    assert loader.calls == ["a"]
    assert cache.stats.hits == 1
    assert cache.stats.misses == 1


async def test_stale_entry_is_served_at_once_and_refreshed_once(clock: FakeClock) -> None:
    cache = memory_cache(clock, ttl=10, stale_ttl=100)
    loader = CountingLoader(delay=0.05)
    cache.register_loader("item", loader)
    assert await cache.get("item:a") == "a#1"
    clock.advance(11)
    started = time.perf_counter()
    stale_values = [await cache.get("item:a") for _ in range(20)]
    assert time.perf_counter() - started < 0.04  # none of them waited for the 50 ms refresh
    assert stale_values == ["a#1"] * 20
    await asyncio.sleep(0.1)
    assert await cache.get("item:a") == "a#2"
    assert loader.calls == ["a", "a"]
    assert cache.stats.stale_hits == 20


async def test_expired_entry_waits_for_a_load(clock: FakeClock) -> None:
    cache = memory_cache(clock, ttl=10, stale_ttl=5)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    await cache.get("item:a")
    clock.advance(16)
    assert await cache.get("item:a") == "a#2"
    assert cache.stats.misses == 2


async def test_registered_durations_override_the_cache_defaults(clock: FakeClock) -> None:
    cache = memory_cache(clock, ttl=1000)

    @cache.loader("short", ttl=timedelta(seconds=5))
    async def load(name: str) -> str:
        return name.upper()

    assert load.__name__ == "load"  # the decorator returns the function itself
    assert await cache.get("short:x") == "X"
    clock.advance(6)
    await cache.get("short:x")
    assert cache.stats.loads == 2


async def test_plain_key_miss_returns_the_default(clock: FakeClock) -> None:
    cache = memory_cache(clock)
    sentinel = object()
    assert await cache.get("nothing", sentinel) is sentinel
    assert await cache.get("nothing") is None
    assert await cache.get("unknown-scheme:x", "d") == "d"
    assert cache.stats.misses == 3


async def test_set_get_delete_with_ttl(clock: FakeClock) -> None:
    cache = memory_cache(clock, ttl=100)
    await cache.set("k", [1, 2], ttl=5)
    assert await cache.get("k") == [1, 2]
    clock.advance(5.01)
    assert await cache.get("k") is None
    await cache.set("k", "again")
    await cache.delete("k")
    assert await cache.get("k") is None


async def test_stored_none_is_a_value(clock: FakeClock) -> None:
    cache = memory_cache(clock)
    await cache.set("nothing", None)
    sentinel = object()
    assert await cache.get("nothing", sentinel) is None
    assert cache.stats.hits == 1


# -- single-flight ---------------------------------------------------------------------------


async def test_concurrent_misses_run_the_loader_once() -> None:
    cache = Cache()
    loader = CountingLoader(delay=0.02)
    cache.register_loader("item", loader)
    results = await asyncio.gather(*(cache.get("item:hot") for _ in range(1000)))
    assert set(results) == {"hot#1"}
    assert loader.calls == ["hot"]


async def test_a_cancelled_waiter_does_not_cancel_the_load_for_the_others() -> None:
    cache = Cache()
    loader = CountingLoader(delay=0.05)
    cache.register_loader("item", loader)
    first = asyncio.create_task(cache.get("item:x"))
    others = [asyncio.create_task(cache.get("item:x")) for _ in range(5)]
    await asyncio.sleep(0.01)
    first.cancel()
    assert await asyncio.gather(*others) == ["x#1"] * 5
    assert first.cancelled()
    assert loader.calls == ["x"]


async def test_a_load_survives_the_cancellation_of_every_waiter() -> None:
    cache = Cache()
    loader = CountingLoader(delay=0.03)
    cache.register_loader("item", loader)
    waiter = asyncio.create_task(cache.get("item:x"))
    await asyncio.sleep(0.005)
    waiter.cancel()
    await asyncio.sleep(0.06)
    assert await cache.get("item:x") == "x#1"
    assert loader.calls == ["x"]


async def test_single_flight_with_a_remote_backend_shares_the_backend_read() -> None:
    backend = BytesBackend()
    backend.hang_seconds = 0.02
    cache = Cache(backend)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    await asyncio.gather(*(cache.get("item:x") for _ in range(50)))
    assert backend.calls.count(("get", "item:x")) == 1
    assert loader.calls == ["x"]


# -- errors from loaders ---------------------------------------------------------------------


async def test_a_failed_load_raises_loader_error_with_the_cause(clock: FakeClock) -> None:
    cache = memory_cache(clock)
    loader = CountingLoader()
    loader.error = ConnectionError("source unreachable")
    cache.register_loader("item", loader)
    with pytest.raises(LoaderError, match="item:x") as caught:
        await cache.get("item:x")
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert caught.value.key == "item:x"
    assert cache.stats.load_errors == 1


async def test_stale_if_error_serves_the_old_value(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = memory_cache(clock, ttl=10, stale_if_error=60)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    assert await cache.get("item:x") == "x#1"
    clock.advance(30)
    loader.error = TimeoutError("slow source")
    with caplog.at_level(logging.WARNING, logger="polycache"):
        assert await cache.get("item:x") == "x#1"
    assert "TimeoutError" in caplog.text
    assert "x#1" not in caplog.text  # values never reach the logs
    assert cache.stats.load_errors == 1
    assert cache.stats.stale_hits == 1
    clock.advance(41)  # 71 s past freshness: beyond stale_if_error
    with pytest.raises(LoaderError):
        await cache.get("item:x")


async def test_stale_refresh_failure_keeps_serving_the_stale_value(clock: FakeClock) -> None:
    cache = memory_cache(clock, ttl=10, stale_ttl=100)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    await cache.get("item:x")
    clock.advance(20)
    loader.error = RuntimeError("down")
    assert await cache.get("item:x") == "x#1"
    await settle()
    assert await cache.get("item:x") == "x#1"
    assert cache.stats.load_errors >= 1


async def test_source_not_found_is_remembered_for_negative_ttl(clock: FakeClock) -> None:
    cache = memory_cache(clock, negative_ttl=30)
    loader = CountingLoader()
    loader.missing.add("gone")
    cache.register_loader("item", loader)
    assert await cache.get("item:gone", "default") == "default"
    assert await cache.get("item:gone") is None
    clock.advance(29)
    assert await cache.get("item:gone") is None
    assert loader.calls == ["gone"]
    clock.advance(2)
    await cache.get("item:gone")
    assert loader.calls == ["gone", "gone"]


async def test_get_or_load_raises_source_not_found(clock: FakeClock) -> None:
    cache = memory_cache(clock)

    async def missing() -> str:
        raise SourceNotFound("nope")

    for _ in range(2):
        with pytest.raises(SourceNotFound, match="k"):
            await cache.get_or_load("k", missing)


async def test_get_or_load_uses_the_explicit_loader(clock: FakeClock) -> None:
    cache = memory_cache(clock, ttl=60)
    calls = 0

    async def build() -> dict[str, int]:
        nonlocal calls
        calls += 1
        return {"rows": calls}

    assert await cache.get_or_load("report:today", build, ttl=5) == {"rows": 1}
    assert await cache.get_or_load("report:today", build, ttl=5) == {"rows": 1}
    clock.advance(6)
    assert await cache.get_or_load("report:today", build, ttl=5) == {"rows": 2}


async def test_refresh_reloads_now(clock: FakeClock) -> None:
    cache = memory_cache(clock)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    assert await cache.get("item:x") == "x#1"
    assert await cache.refresh("item:x") == "x#2"
    assert await cache.get("item:x") == "x#2"
    with pytest.raises(ConfigurationError, match="no loader"):
        await cache.refresh("plain")
    loader.error = RuntimeError("down")
    with pytest.raises(LoaderError):
        await cache.refresh("item:x")
    assert await cache.get("item:x") == "x#2"  # a failed refresh keeps what was cached


async def test_conditional_loader_revalidates_without_download(clock: FakeClock) -> None:
    cache = memory_cache(clock, ttl=10)
    source = VersionedLoader()
    cache.register_loader("obj", source)
    assert await cache.get("obj:a") == "v1-body"
    clock.advance(11)
    assert await cache.get("obj:a") == "v1-body"
    assert (source.downloads, source.revalidations) == (1, 1)
    source.value, source.version = "v2-body", 2
    clock.advance(11)
    assert await cache.get("obj:a") == "v2-body"
    assert (source.downloads, source.revalidations) == (2, 2)


# -- get_many --------------------------------------------------------------------------------


async def test_get_many_batches_and_reports_per_key_errors(clock: FakeClock) -> None:
    cache = memory_cache(clock)
    loader = BatchCountingLoader()
    loader.missing.add("gone")
    loader.failing_names.add("bad")
    cache.register_loader("p", loader)
    await cache.set("plain", "here")
    keys = ["p:a", "p:b", "p:gone", "p:bad", "plain", "other", "p:a"]
    results = await cache.get_many(keys, default="-", return_exceptions=True)
    assert loader.batches == [["a", "b", "gone", "bad"]]
    assert results["p:a"] == "a@batch1"
    assert results["p:gone"] == "-"
    assert results["plain"] == "here"
    assert results["other"] == "-"
    assert isinstance(results["p:bad"], LoaderError)
    assert list(results) == ["p:a", "p:b", "p:gone", "p:bad", "plain", "other"]
    # every good value was cached, the failure did not sink the batch
    with pytest.raises(LoaderError, match="p:bad"):
        await cache.get_many(["p:a", "p:b", "p:bad"])
    assert await cache.get("p:b") == "b@batch1"


async def test_get_many_joins_loads_already_running() -> None:
    cache = Cache()
    loader = BatchCountingLoader()
    loader.delay = 0.02
    cache.register_loader("p", loader)
    single = asyncio.create_task(cache.get("p:a"))
    await asyncio.sleep(0)
    many = await cache.get_many(["p:a", "p:b", "p:c"])
    assert await single == many["p:a"]
    assert loader.calls == ["a"]
    assert loader.batches == [["b", "c"]]


# -- backends failing ------------------------------------------------------------------------


async def test_fail_open_when_the_backend_is_down() -> None:
    backend = BytesBackend()
    cache = Cache(backend)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    backend.failing = True
    assert await cache.get("item:x") == "x#1"
    await cache.set("k", "v")  # does not raise
    assert await cache.get("k") is None
    assert cache.stats.backend_errors >= 3


async def test_fail_open_bounds_a_hanging_backend_by_backend_timeout() -> None:
    backend = BytesBackend()
    backend.hang_seconds = 10
    cache = Cache(backend, backend_timeout=0.1)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    started = time.perf_counter()
    assert await cache.get("item:x") == "x#1"
    # The caller pays one timeout (the read); the write runs after it has its answer.
    assert time.perf_counter() - started < 0.19
    assert cache.stats.backend_errors == 1
    await asyncio.sleep(0.15)
    assert cache.stats.backend_errors == 2  # the write, cut at 0.1 s in the background


async def test_fail_closed_raises_backend_errors() -> None:
    backend = BytesBackend()
    cache = Cache(backend, fail_open=False, backend_timeout=0.05)
    backend.failing = True
    with pytest.raises(BackendError, match="down"):
        await cache.get("k")
    backend.failing = False
    backend.hang_seconds = 1
    with pytest.raises(BackendTimeout, match=r"0\.05"):
        await cache.get("k")


async def test_unreadable_stored_bytes_count_as_a_miss() -> None:
    backend = BytesBackend()
    cache = Cache(backend)
    await cache.set("k", "v")
    entry = backend.entries["k"]
    backend.entries["k"] = type(entry)(
        b"\x00garbage",
        *tuple(getattr(entry, name) for name in ("fresh_until", "stale_until", "expires_at")),
    )
    assert await cache.get("k", "default") == "default"
    assert cache.stats.backend_errors == 1
    strict = Cache(backend, fail_open=False)
    with pytest.raises(SerializationError):
        await strict.get("k")


async def test_too_large_loaded_value_is_returned_uncached() -> None:
    backend = BytesBackend(max_item_bytes=10)
    cache = Cache(backend)

    async def big() -> str:
        return "x" * 100

    assert await cache.get_or_load("big", big) == "x" * 100
    assert "big" not in backend.entries
    assert cache.stats.uncached == 1
    with pytest.raises(SerializationError, match="limit of 10 bytes"):
        await cache.set("big", "x" * 100)
    assert ("set", "big") not in backend.calls


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [42, b"bytes", None, "", ["unhashable"]])
async def test_bad_keys_are_rejected_without_touching_the_cache(key: object) -> None:
    cache = Cache()
    await cache.set("good", 1)
    with pytest.raises(ConfigurationError, match="key"):
        await cache.get(key)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="key"):
        await cache.get_or_load(key, CountingLoader())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="key"):
        await cache.set(key, 2)  # type: ignore[arg-type]
    assert await cache.get("good") == 1


@pytest.mark.parametrize("ttl", [-1, float("nan"), float("inf"), "10", True])
async def test_bad_ttl_is_rejected_and_the_old_value_kept(ttl: object) -> None:
    cache = Cache()
    await cache.set("k", "old")
    with pytest.raises(ConfigurationError, match="ttl"):
        await cache.set("k", "new", ttl=ttl)  # type: ignore[arg-type]
    assert await cache.get("k") == "old"


async def test_register_loader_validates() -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError, match="scheme"):
        cache.register_loader("a:b", CountingLoader())
    with pytest.raises(ConfigurationError, match="callable"):
        cache.register_loader("a", "not callable")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="stale_ttl"):
        cache.register_loader("a", CountingLoader(), stale_ttl=-5)


async def test_disabled_cache_always_loads(clock: FakeClock) -> None:
    cache = memory_cache(clock, disabled=True)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    assert await cache.get("item:x") == "x#1"
    assert await cache.get("item:x") == "x#2"


# -- lifecycle -------------------------------------------------------------------------------


async def test_async_with_closes_and_cancels_background_refreshes(clock: FakeClock) -> None:
    loader = CountingLoader(delay=10)
    async with memory_cache(clock, ttl=1, stale_ttl=100) as cache:
        cache.register_loader("item", loader)
        await cache.set("item:x", "old", ttl=1)
        clock.advance(2)
        assert await cache.get("item:x") == "old"
        await settle()
        assert loader.calls == ["x"]
        started = time.perf_counter()
    # leaving the block cancelled the 10 s refresh instead of waiting for it
    assert time.perf_counter() - started < 1


def test_cache_survives_a_new_event_loop_per_invocation() -> None:
    clock = FakeClock()
    cache = memory_cache(clock, ttl=1, stale_ttl=100)
    loader = CountingLoader(delay=0.01)
    cache.register_loader("item", loader)
    assert asyncio.run(cache.get("item:x")) == "x#1"
    clock.advance(2)
    # the stale refresh started here is cancelled when asyncio.run returns ...
    assert asyncio.run(cache.get("item:x")) == "x#1"
    # ... and the next loop starts a new one instead of waiting on a dead future
    assert asyncio.run(cache.get("item:x")) == "x#1"

    async def invocation() -> tuple[object, object]:
        served = await cache.get("item:x")  # stale: starts a refresh on this loop
        await asyncio.sleep(0.05)
        return served, await cache.get("item:x")

    served, refreshed = asyncio.run(invocation())
    assert served == "x#1"
    assert refreshed == f"x#{len(loader.calls)}"
    assert len(loader.calls) == 4


def test_stats_is_a_snapshot() -> None:
    cache = Cache()
    before = cache.stats
    asyncio.run(cache.get("missing"))
    assert before.misses == 0
    assert cache.stats.misses == 1


async def test_a_set_during_a_load_is_not_overwritten_by_the_load() -> None:
    cache = Cache()
    loader = CountingLoader(delay=0.03)
    cache.register_loader("item", loader)
    loading = asyncio.create_task(cache.get("item:x"))
    await asyncio.sleep(0.005)
    await cache.set("item:x", "written while loading")
    assert await loading == "x#1"  # the waiter gets what it asked to load ...
    assert await cache.get("item:x") == "written while loading"  # ... the newer write stays


async def test_a_delete_during_a_load_keeps_the_load_uncached() -> None:
    backend = BytesBackend()
    cache = Cache(backend)
    loader = CountingLoader(delay=0.03)
    cache.register_loader("item", loader)
    loading = asyncio.create_task(cache.get("item:x"))
    await asyncio.sleep(0.005)
    await cache.delete("item:x")
    assert await loading == "x#1"
    assert "item:x" not in backend.entries


async def test_a_backend_timeout_keeps_the_backends_own_message() -> None:
    class TimingOutBackend(BytesBackend):
        async def get(self, key: str) -> Entry | None:
            raise BackendTimeout("vendor TIMEOUT_ERROR: deadline exceeded")

    cache = Cache(TimingOutBackend(), fail_open=False)
    with pytest.raises(BackendTimeout, match="vendor TIMEOUT_ERROR"):
        await cache.get("k")


async def test_a_misconfigured_backend_is_not_hidden_behind_a_miss() -> None:
    class MisconfiguredBackend(BytesBackend):
        async def get(self, key: str) -> Entry | None:
            raise ConfigurationError("set MOMENTO_API_KEY")

    cache = Cache(MisconfiguredBackend())
    with pytest.raises(ConfigurationError, match="MOMENTO_API_KEY"):
        await cache.get("k")


async def test_a_cancelled_reader_does_not_fail_the_callers_sharing_its_read() -> None:
    backend = BytesBackend()
    cache = Cache(backend)
    await cache.set("k", "stored")
    backend.hang_seconds = 0.05
    reader = asyncio.create_task(cache.get("k"))
    await asyncio.sleep(0.01)
    sharing = [asyncio.create_task(cache.get("k")) for _ in range(3)]
    await asyncio.sleep(0.01)
    reader.cancel()
    assert await asyncio.gather(*sharing) == ["stored"] * 3
    assert reader.cancelled()
