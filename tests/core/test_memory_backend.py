"""The memory backend: LRU-bounded, expiry on read, no tasks."""

from __future__ import annotations

import asyncio
import threading

import pytest

from polycache import Cache, ConfigurationError, Entry
from polycache.backends.memory import MemoryBackend, record_from_entry
from tests.conftest import FakeClock


def entry(value: object, expires_at: float = 2e9) -> Entry:
    return Entry(value, expires_at, expires_at, expires_at)


async def test_least_recently_used_is_evicted_first() -> None:
    backend = MemoryBackend(max_entries=3)
    for key in "abc":
        await backend.set(key, entry(key))
    assert await backend.get("a") is not None  # a is now the most recent
    await backend.set("d", entry("d"))
    assert await backend.get("b") is None
    assert {key for key in "acd" if backend.peek(key)} == set("acd")
    assert len(backend) == 3


async def test_bounded_under_many_inserts() -> None:
    backend = MemoryBackend(max_entries=1000)
    for index in range(50_000):
        backend.put(f"k{index}", record_from_entry(entry(index)))
    assert len(backend) <= 1000
    assert backend.peek("k49999") is not None


async def test_expiry_is_checked_on_read() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    await backend.set("k", entry("v", expires_at=clock.now + 5))
    assert await backend.get("k") is not None
    clock.advance(5)
    assert await backend.get("k") is None
    assert len(backend) == 0


def test_no_threads_or_tasks_are_started() -> None:
    threads_before = threading.active_count()
    backend = MemoryBackend()
    cache = Cache(backend)

    async def use() -> None:
        await cache.set("k", 1)
        assert await cache.get("k") == 1
        assert len(asyncio.all_tasks()) == 1  # only this coroutine's own task

    asyncio.run(use())
    assert threading.active_count() == threads_before


def test_usable_from_several_event_loops() -> None:
    cache = Cache(MemoryBackend())
    asyncio.run(cache.set("k", "v"))
    assert asyncio.run(cache.get("k")) == "v"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True])
def test_max_entries_is_validated(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_entries"):
        MemoryBackend(max_entries=bad)  # type: ignore[arg-type]


def test_from_url() -> None:
    assert MemoryBackend.from_url("memory://").max_entries == 10_000
    assert MemoryBackend.from_url("memory://?max_entries=7").max_entries == 7
    with pytest.raises(ConfigurationError, match="given twice"):
        MemoryBackend.from_url("memory://?max_entries=7&max_entries=8")
