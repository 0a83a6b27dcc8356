"""invalidate_tags costs O(1) backend writes per tag, however many entries carry it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from polycache import Cache, ConfigurationError, Entry
from tests.core.fakes import BytesBackend


async def test_invalidating_tags_writes_one_entry_per_tag_and_scans_nothing() -> None:
    backend = BytesBackend(max_item_bytes=None)
    cache = Cache(backend, ttl=60)
    for number in range(500):
        await cache.set(f"k{number}", number, tags=["a", "b"] if number % 2 else ["c"])
    backend.calls.clear()
    await cache.invalidate_tags("a", "b", "c")
    assert sorted(backend.calls) == [
        ("set", "__polycache_tag__:a"),
        ("set", "__polycache_tag__:b"),
        ("set", "__polycache_tag__:c"),
    ]
    assert await cache.get("k1") is None
    assert await cache.get("k2") is None


async def test_memoized_functions_take_tags() -> None:
    cache = Cache(ttl=60)
    calls = 0

    @cache.cached(key="user:{user_id}", tags=["users"])
    async def get_user(user_id: int) -> dict[str, int]:
        nonlocal calls
        calls += 1
        return {"id": user_id}

    assert await get_user(1) == {"id": 1}
    assert await get_user(1) == {"id": 1}
    await cache.invalidate_tags("users")
    assert await get_user(1) == {"id": 1}
    assert calls == 2
    assert await get_user.refresh(1) == {"id": 1}
    await cache.invalidate_tags("users")
    assert not await cache.exists("user:1")  # the refreshed entry carried the tag too


class ObjectBackend:
    """A custom remote backend that keeps objects (stores_objects=True)."""

    stores_objects = True
    max_item_bytes = None

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    async def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    async def set(self, key: str, entry: Entry) -> None:
        self.entries[key] = entry

    async def delete(self, key: str) -> None:
        self.entries.pop(key, None)

    async def aclose(self) -> None:
        return None


async def test_tags_on_a_backend_that_keeps_objects_are_refused_not_ignored() -> None:
    cache = Cache(ObjectBackend())
    with pytest.raises(ConfigurationError, match="tags need a backend that stores bytes"):
        await cache.set("k", 1, tags=["t"])


async def test_a_failed_store_after_a_load_is_logged_even_failing_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = BytesBackend(max_item_bytes=None)
    cache = Cache(backend, fail_open=False, breaker_threshold=0)

    async def load() -> int:
        backend.failing = True  # the read worked; the store after it fails
        return 1

    with caplog.at_level(logging.WARNING, logger="polycache"):
        assert await cache.get_or_load("k", load) == 1
        await asyncio.sleep(0.05)
    assert any("storing the loaded value of 'k' failed" in r.getMessage() for r in caplog.records)
