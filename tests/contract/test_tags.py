"""Tags on every backend: invalidate_tags makes every entry carrying a tag a miss."""

from __future__ import annotations

import pytest

from polycache import Backend, Cache, ConfigurationError


async def test_invalidating_a_tag_misses_every_entry_that_carries_it(backend: Backend) -> None:
    cache = Cache(backend, ttl=60)
    await cache.set("tag-a", 1, tags=["user:42"])
    await cache.set("tag-b", 2, tags=["user:42", "team:7"])
    await cache.set("tag-c", 3, tags=["team:7"])
    await cache.set("tag-d", 4)
    assert await cache.get("tag-a") == 1
    await cache.invalidate_tags("user:42")
    assert await cache.get_many(["tag-a", "tag-b", "tag-c", "tag-d"]) == {
        "tag-a": None,
        "tag-b": None,
        "tag-c": 3,
        "tag-d": 4,
    }
    await cache.set("tag-a", 5, tags=["user:42"])  # written after: a value again
    assert await cache.get("tag-a") == 5


async def test_an_entry_written_again_without_the_tag_is_kept(backend: Backend) -> None:
    cache = Cache(backend, ttl=60)
    await cache.set("retagged", 1, tags=["t"])
    await cache.set("retagged", 2)
    await cache.invalidate_tags("t")
    assert await cache.get("retagged") == 2


async def test_loaded_entries_carry_their_loaders_tags(backend: Backend) -> None:
    cache = Cache(backend, ttl=60)
    calls: list[str] = []

    async def load_user(user_id: str) -> dict[str, str]:
        calls.append(user_id)
        return {"id": user_id}

    cache.register_loader("user", load_user, tags=lambda user_id: [f"user:{user_id}"])
    assert await cache.get("user:1") == {"id": "1"}
    assert await cache.get("user:2") == {"id": "2"}
    await cache.invalidate_tags("user:1")
    assert await cache.get("user:1") == {"id": "1"}
    assert await cache.get("user:2") == {"id": "2"}
    assert calls == ["1", "2", "1"]

    async def report() -> str:
        return "report"

    assert await cache.get_or_load("report", report, tags=["reports"]) == "report"
    await cache.invalidate_tags("reports")
    assert not await cache.exists("report")


async def test_a_second_cache_on_the_same_backend_sees_the_invalidation(backend: Backend) -> None:
    if backend.stores_objects:
        pytest.skip("an in-process backend is not shared by two processes")
    writer, reader = Cache(backend, ttl=60), Cache(backend, ttl=60)
    await writer.set("shared-tagged", "v", tags=["shared"])
    assert await reader.get("shared-tagged") == "v"
    await writer.invalidate_tags("shared")
    assert await reader.get("shared-tagged") is None


async def test_tags_are_validated(backend: Backend) -> None:
    cache = Cache(backend)
    with pytest.raises(ConfigurationError, match="list of tag names"):
        await cache.set("k", 1, tags="user:42")
    with pytest.raises(ConfigurationError, match="non-empty"):
        await cache.set("k", 1, tags=[""])
    with pytest.raises(ConfigurationError, match="at least one tag"):
        await cache.invalidate_tags()
