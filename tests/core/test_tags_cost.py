"""invalidate_tags costs O(1) backend writes per tag, however many entries carry it."""

from __future__ import annotations

from polycache import Cache
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
