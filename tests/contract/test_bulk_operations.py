"""Bulk and housekeeping operations, through a Cache, on every backend."""

from __future__ import annotations

import pytest

from polycache import Backend, Cache, ClearableBackend, ConfigurationError


async def test_set_many_then_get_many(backend: Backend) -> None:
    cache = Cache(backend, ttl=60)
    values = {f"bulk-{n}": {"n": n} for n in range(30)}
    await cache.set_many(values)
    assert await cache.get_many(list(values)) == values
    assert await cache.get_many(["bulk-1", "bulk-absent"]) == {
        "bulk-1": {"n": 1},
        "bulk-absent": None,
    }


async def test_delete_many_forgets_only_those_keys(backend: Backend) -> None:
    cache = Cache(backend, ttl=60)
    await cache.set_many({"dm-a": 1, "dm-b": 2, "dm-c": 3})
    await cache.delete_many(["dm-a", "dm-b", "dm-never-set"])
    assert await cache.get_many(["dm-a", "dm-b", "dm-c"]) == {"dm-a": None, "dm-b": None, "dm-c": 3}


async def test_exists_never_loads(backend: Backend) -> None:
    cache = Cache(backend, ttl=60)
    calls = 0

    async def load(name: str) -> str:
        nonlocal calls
        calls += 1
        return name

    cache.register_loader("item", load)
    assert await cache.exists("item:x") is False
    assert calls == 0
    assert await cache.get("item:x") == "x"
    assert await cache.exists("item:x") is True
    await cache.set("stored-none", None)
    assert await cache.exists("stored-none") is True  # a stored None is a value


async def test_clear_forgets_every_entry_of_the_cache(backend: Backend) -> None:
    if not isinstance(backend, ClearableBackend):
        pytest.fail(f"{type(backend).__name__} does not implement ClearableBackend.clear")
    cache = Cache(backend, ttl=60)
    await cache.set_many({"clear-a": 1, "clear-b": 2})
    await cache.clear()
    assert await cache.get_many(["clear-a", "clear-b"]) == {"clear-a": None, "clear-b": None}
    await cache.set("clear-a", 3)  # usable afterwards
    assert await cache.get("clear-a") == 3


@pytest.mark.parametrize("keys", ["abc", b"abc", None])
async def test_bulk_operations_refuse_a_lone_str(backend: Backend, keys: object) -> None:
    cache = Cache(backend)
    with pytest.raises(ConfigurationError, match="iterable of keys"):
        await cache.delete_many(keys)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="mapping"):
        await cache.set_many(keys)  # type: ignore[arg-type]
