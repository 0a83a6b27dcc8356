"""Per-call freshness (max_age, ttl), jittered expiry and early refresh."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from polycache import Cache, ConfigurationError
from tests.conftest import FakeClock
from tests.core.fakes import CountingLoader


async def test_max_age_zero_forces_a_reload(clock: FakeClock) -> None:
    cache = Cache(ttl=300, clock=clock)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    assert await cache.get("item:x") == "x#1"
    assert await cache.get("item:x") == "x#1"
    assert await cache.get("item:x", max_age=0) == "x#2"
    assert await cache.get("item:x") == "x#2"  # the reload was stored


async def test_max_age_counts_older_entries_as_expired(clock: FakeClock) -> None:
    cache = Cache(ttl=300, clock=clock)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    assert await cache.get("item:x") == "x#1"
    clock.advance(10)
    assert await cache.get("item:x", max_age=60) == "x#1"  # 10 s old: young enough
    clock.advance(60)
    assert await cache.get("item:x", max_age=60) == "x#2"  # 70 s old: reloaded
    assert loader.calls == ["x", "x"]


async def test_max_age_on_a_plain_key_is_a_miss_when_too_old(clock: FakeClock) -> None:
    cache = Cache(ttl=300, clock=clock)
    await cache.set("plain", 1)
    clock.advance(30)
    assert await cache.get("plain", max_age=60) == 1
    assert await cache.get("plain", "default", max_age=10) == "default"


async def test_max_age_with_a_failing_source_follows_stale_if_error(clock: FakeClock) -> None:
    cache = Cache(ttl=300, stale_if_error=600, clock=clock)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    assert await cache.get("item:x") == "x#1"
    loader.error = RuntimeError("down")
    assert await cache.get("item:x", max_age=0) == "x#1"


async def test_max_age_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="max_age"):
        await Cache().get("k", max_age=-1)


async def test_a_calls_ttl_applies_to_what_it_loads(clock: FakeClock) -> None:
    cache = Cache(ttl=300, clock=clock)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    assert await cache.get("item:x", ttl=5) == "x#1"
    clock.advance(6)
    assert await cache.get("item:x") == "x#2"
    clock.advance(6)
    assert await cache.get("item:x") == "x#2"  # loaded with the loader's own 300 s


async def test_ttl_jitter_spreads_expiry_within_its_fraction(clock: FakeClock) -> None:
    cache = Cache(ttl=100, ttl_jitter=0.2, clock=clock)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    await cache.get_many([f"item:{n}" for n in range(200)])
    clock.advance(79.9)
    assert loader.calls.count("0") == 1
    await cache.get_many([f"item:{n}" for n in range(200)])
    assert len(loader.calls) == 200  # nothing expires before 80 % of the ttl
    clock.advance(10)
    await cache.get_many([f"item:{n}" for n in range(200)])
    reloaded = len(loader.calls) - 200
    assert 50 < reloaded < 150  # about half expire in the first half of the jitter window
    clock.advance(10.2)
    await cache.get_many([f"item:{n}" for n in range(200)])
    assert len(loader.calls) == 400  # all expired by the full ttl


def test_ttl_jitter_is_validated_and_read_from_the_environment() -> None:
    assert Cache(environ={"POLYCACHE_TTL_JITTER": "0.1"}).settings.ttl_jitter == 0.1
    with pytest.raises(ConfigurationError, match="POLYCACHE_TTL_JITTER"):
        Cache(environ={"POLYCACHE_TTL_JITTER": "2"})
    with pytest.raises(ConfigurationError, match="ttl_jitter"):
        Cache(ttl_jitter=-0.1)
    cache = Cache()
    with pytest.raises(ConfigurationError, match="ttl_jitter"):
        cache.register_loader("x", CountingLoader(), ttl_jitter=1.5)


async def test_early_refresh_reloads_a_hot_key_before_anyone_waits() -> None:
    cache = Cache(ttl=0.3, early_refresh=True)
    loader = CountingLoader(delay=0.05)
    cache.register_loader("item", loader)
    waited: list[float] = []
    loop = asyncio.get_running_loop()
    await cache.get("item:hot")
    for _ in range(150):
        started = loop.time()
        await cache.get("item:hot")
        waited.append(loop.time() - started)
        await asyncio.sleep(0.005)
    assert len(loader.calls) >= 3  # refreshed over about a second of calls
    # Nobody waited for a load: every call took far less than the 50 ms a load takes.
    assert max(waited) < 0.03, statistics.quantiles(waited, n=100)[-1]


async def test_without_early_refresh_some_callers_wait() -> None:
    cache = Cache(ttl=0.3)
    loader = CountingLoader(delay=0.05)
    cache.register_loader("item", loader)
    waited: list[float] = []
    loop = asyncio.get_running_loop()
    for _ in range(150):
        started = loop.time()
        await cache.get("item:hot")
        waited.append(loop.time() - started)
        await asyncio.sleep(0.005)
    assert max(waited) >= 0.04
