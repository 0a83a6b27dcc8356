"""The contract every backend must meet, at the Backend level and through a Cache."""

from __future__ import annotations

import asyncio
import time

import pytest

from polycache import Backend, Cache, Entry, SerializationError, SourceNotFound


def entry(
    value: object,
    *,
    ttl: float = 60.0,
    stale: float = 0.0,
    keep: float = 0.0,
    validator: str | None = None,
    negative: bool = False,
) -> Entry:
    now = time.time()
    return Entry(
        value, now + ttl, now + ttl + stale, now + ttl + max(stale, keep), validator, negative
    )


KEYS = [
    "plain",
    "users:42",
    "ssm:/prod/db/url",
    "s3://bucket/dir/file.json?x=1&y=2",
    "ключ-日本",
    "a" * 200,
    "spaces and/slashes%20",
]


async def test_missing_key_is_none(backend: Backend) -> None:
    assert await backend.get("never-set") is None


@pytest.mark.parametrize("key", KEYS)
async def test_set_then_get_returns_the_entry(backend: Backend, key: str) -> None:
    written = entry(b"value-\x00\xff", stale=30, keep=60, validator='"etag-1"')
    await backend.set(key, written)
    read = await backend.get(key)
    assert read is not None
    assert read.value == b"value-\x00\xff"
    assert read.fresh_until == pytest.approx(written.fresh_until)
    assert read.stale_until == pytest.approx(written.stale_until)
    assert read.expires_at == pytest.approx(written.expires_at)
    assert read.validator == '"etag-1"'
    assert read.negative is False


async def test_negative_entry_round_trips(backend: Backend) -> None:
    await backend.set("missing-thing", entry(b"", negative=True))
    read = await backend.get("missing-thing")
    assert read is not None and read.negative is True


async def test_overwrite_replaces(backend: Backend) -> None:
    await backend.set("k", entry(b"one"))
    await backend.set("k", entry(b"two"))
    read = await backend.get("k")
    assert read is not None and read.value == b"two"


async def test_keys_are_independent(backend: Backend) -> None:
    for index in range(20):
        await backend.set(f"key-{index}", entry(str(index).encode()))
    for index in range(20):
        read = await backend.get(f"key-{index}")
        assert read is not None and read.value == str(index).encode()


async def test_delete_forgets_and_missing_delete_is_fine(backend: Backend) -> None:
    await backend.set("k", entry(b"v"))
    await backend.delete("k")
    assert await backend.get("k") is None
    await backend.delete("k")
    await backend.delete("never-set")


async def test_entry_past_expires_at_is_gone(backend: Backend) -> None:
    await backend.set("short", entry(b"v", ttl=1.0))
    await backend.set("long", entry(b"v", ttl=60.0))
    await asyncio.sleep(1.3)
    assert await backend.get("short") is None
    assert await backend.get("long") is not None


async def test_concurrent_operations(backend: Backend) -> None:
    await asyncio.gather(*(backend.set(f"c{index}", entry(b"x" * index)) for index in range(50)))
    reads = await asyncio.gather(*(backend.get(f"c{index}") for index in range(50)))
    assert [read.value if read else None for read in reads] == [b"x" * index for index in range(50)]


async def test_usable_after_aclose(backend: Backend) -> None:
    await backend.set("k", entry(b"v"))
    await backend.aclose()
    read = await backend.get("k")
    assert read is not None and read.value == b"v"
    await backend.aclose()


# -- through a Cache -----------------------------------------------------------------------------

VALUES = [
    "text ✓",
    b"\x00bytes\xff",
    {"a": [1, 2.5, None, True]},
    [1, "two"],
    42,
    3.25,
    True,
    "",
    b"",
    None,
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
async def test_cache_round_trips_values(backend: Backend, value: object) -> None:
    cache = Cache(backend)
    await cache.set("v", value)
    sentinel = object()
    got = await cache.get("v", sentinel)
    assert got == value and type(got) is type(value)


async def test_cache_stored_none_is_a_value(backend: Backend) -> None:
    cache = Cache(backend)
    calls = 0

    async def load() -> None:
        nonlocal calls
        calls += 1

    assert await cache.get_or_load("none-key", load) is None
    assert await cache.get_or_load("none-key", load) is None
    assert calls == 1


async def test_cache_single_flight(backend: Backend) -> None:
    cache = Cache(backend)
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return "loaded"

    results = await asyncio.gather(*(cache.get_or_load("hot", load) for _ in range(100)))
    assert results == ["loaded"] * 100
    assert calls == 1


async def test_cache_negative_caching(backend: Backend) -> None:
    cache = Cache(backend, negative_ttl=60)
    calls = 0

    async def missing() -> str:
        nonlocal calls
        calls += 1
        raise SourceNotFound("no such thing")

    for _ in range(3):
        with pytest.raises(SourceNotFound):
            await cache.get_or_load("absent", missing)
    assert calls == 1


async def test_two_caches_share_one_backend(backend: Backend) -> None:
    writer, reader = Cache(backend), Cache(backend)
    await writer.set("shared", {"from": "writer"})
    assert await reader.get("shared") == {"from": "writer"}
    await reader.delete("shared")
    assert await writer.get("shared") is None


async def test_cache_rejects_unserializable_without_touching_the_old_value(
    backend: Backend,
) -> None:
    cache = Cache(backend)
    await cache.set("k", "old")
    if backend.stores_objects:
        await cache.set("k", {1, 2})
        assert await cache.get("k") == {1, 2}
        return
    with pytest.raises(SerializationError, match="set"):
        await cache.set("k", {1, 2})
    assert await cache.get("k") == "old"


async def test_cache_rejects_values_over_the_item_limit(backend: Backend) -> None:
    limit = backend.max_item_bytes
    if limit is None:
        assert backend.stores_objects
        return
    cache = Cache(backend)
    await cache.set("big", "small")
    with pytest.raises(SerializationError, match="limit"):
        await cache.set("big", b"x" * (limit + 1))
    assert await cache.get("big") == "small"


ODD_KEYS = [
    ".",
    "..",
    "/",
    "a/../b",
    "./x",
    "/leading/and/trailing/",
    "100%",
    "%2F%25",
    " spaced  key ",
    "line\nbreak\r\ttab",
    "what?",
    "frag#ment",
    "a&b=c;d",
    "ключ 日本 🙂",
    "\\back\\slash",
    "k" * 1000,
]


@pytest.mark.parametrize("key", ODD_KEYS, ids=repr)
async def test_odd_keys_round_trip(backend: Backend, key: str) -> None:
    await backend.set(key, entry(b"odd"))
    read = await backend.get(key)
    assert read is not None and read.value == b"odd"
    # No other key shares its storage: a normalised path would land elsewhere.
    assert await backend.get(key + "-other") is None
    await backend.delete(key)
    assert await backend.get(key) is None
