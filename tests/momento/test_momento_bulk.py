"""Bulk operations and clear on Momento, directly and behind a near-cache, over the stand-in."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from polycache import Backend, BackendError, Entry
from polycache._contracts import BatchBackend, ClearableBackend
from polycache.backends.momento import BATCH_CONCURRENCY, MomentoBackend
from polycache.backends.near import NearCacheBackend
from tests.stand_ins.momento_fixtures import TEST_CACHE
from tests.stand_ins.momento_server import MomentoStandIn

pytestmark = pytest.mark.momento


def entry(value: bytes, *, ttl: float = 60.0) -> Entry:
    now = time.time()
    return Entry(value, now + ttl, now + ttl, now + ttl)


@pytest.fixture(params=["momento", "near_momento"])
def bulk_backend(request: pytest.FixtureRequest) -> Backend:
    backend: Backend = request.getfixturevalue(f"{request.param}_backend")
    return backend


def test_both_offer_the_optional_protocols(
    momento_backend: MomentoBackend, near_momento_backend: NearCacheBackend
) -> None:
    for backend in (momento_backend, near_momento_backend):
        assert isinstance(backend, BatchBackend)
        assert isinstance(backend, ClearableBackend)


async def test_set_many_get_many_delete_many(bulk_backend: Backend) -> None:
    assert isinstance(bulk_backend, BatchBackend)
    entries = {f"k{index}": entry(str(index).encode()) for index in range(40)}
    await bulk_backend.set_many(entries)
    keys = ["absent", *entries, "k3"]
    read = await bulk_backend.get_many(keys)
    assert [item.value if item else None for item in read] == [
        None,
        *(str(index).encode() for index in range(40)),
        b"3",
    ]
    await bulk_backend.delete_many(["k0", "k1", "never-set"])
    read = await bulk_backend.get_many(["k0", "k1", "k2"])
    assert [item.value if item else None for item in read] == [None, None, b"2"]
    assert await bulk_backend.get_many([]) == []
    await bulk_backend.set_many({})
    await bulk_backend.delete_many([])


async def test_bulk_requests_run_concurrently_and_bounded(
    momento_backend: MomentoBackend, momento: MomentoStandIn
) -> None:
    await momento_backend.connect()
    momento.fault(delay=0.05)
    momento.clear_calls()
    started = time.perf_counter()
    await momento_backend.set_many({f"k{index}": entry(b"v") for index in range(64)})
    elapsed = time.perf_counter() - started
    assert momento.calls()["Set"] == 64
    assert momento.peak_in_flight() == BATCH_CONCURRENCY
    assert elapsed < 64 * 0.05 / 2  # not one after another
    momento.clear_calls()
    read = await momento_backend.get_many([f"k{index}" for index in range(64)])
    assert all(item is not None for item in read)
    assert momento.peak_in_flight() == BATCH_CONCURRENCY


async def test_a_failed_bulk_read_raises(
    momento_backend: MomentoBackend, momento: MomentoStandIn
) -> None:
    await momento_backend.connect()
    momento.fault("UNAVAILABLE", methods=["Get"])
    with pytest.raises(BackendError, match="SERVER_UNAVAILABLE"):
        await momento_backend.get_many(["a", "b", "c"])


async def user_item(momento: MomentoStandIn, key: str, value: str | None = None) -> str | None:
    """Write (or read, with `value` None) an item the way another application would."""
    from momento import CacheClientAsync, Configurations, CredentialProvider
    from momento.responses import CacheGet

    provider = CredentialProvider.for_momento_local("127.0.0.1", momento.port)
    async with CacheClientAsync(
        Configurations.Laptop.latest(), provider, timedelta(seconds=60)
    ) as client:
        if value is not None:
            await client.set(TEST_CACHE, key, value)
            return value
        response = await client.get(TEST_CACHE, key)
        return response.value_string if isinstance(response, CacheGet.Hit) else None


async def test_clear_forgets_only_polycaches_entries_with_one_write(
    bulk_backend: Backend, momento: MomentoStandIn
) -> None:
    assert isinstance(bulk_backend, ClearableBackend)
    await user_item(momento, "users-own-item", "keep me")
    await user_item(momento, "polycache-looking:k", "keep me too")
    for index in range(10):
        await bulk_backend.set(f"k{index}", entry(b"v"))
    assert await bulk_backend.get("k0") is not None
    momento.clear_calls()
    await bulk_backend.clear()
    calls = momento.calls()
    del calls["Publish"]  # a near-cache announces the clear to other processes (docs/fleet.md)
    assert calls == {"Set": 1}  # O(1): a new generation, nothing deleted
    for index in range(10):
        assert await bulk_backend.get(f"k{index}") is None
    assert await user_item(momento, "users-own-item") == "keep me"
    assert await user_item(momento, "polycache-looking:k") == "keep me too"
    await bulk_backend.set("k0", entry(b"after"))
    read = await bulk_backend.get("k0")
    assert read is not None and read.value == b"after"


async def test_another_process_sees_a_clear_within_generation_refresh(
    momento: MomentoStandIn,
) -> None:
    clearing = MomentoBackend.from_url(momento.url(TEST_CACHE))
    other = MomentoBackend.from_url(momento.url(TEST_CACHE, generation_refresh=0.2))
    await clearing.set("k", entry(b"v"))
    assert await other.get("k") is not None
    await clearing.clear()
    await asyncio.sleep(0.25)
    await other.get("k")  # starts a background read of the generation; answers at once
    await asyncio.sleep(0.05)
    assert await other.get("k") is None
    await other.set("k", entry(b"new"))
    read = await clearing.get("k")
    assert read is not None and read.value == b"new"  # both write the same generation
    restarted = MomentoBackend.from_url(momento.url(TEST_CACHE))
    read = await restarted.get("k")  # a new process reads the generation when it connects
    assert read is not None and read.value == b"new"
    for backend in (clearing, other, restarted):
        await backend.aclose()


async def test_namespaces_are_cleared_apart(momento: MomentoStandIn) -> None:
    first = MomentoBackend.from_url(momento.url(TEST_CACHE, namespace="first"))
    second = MomentoBackend.from_url(momento.url(TEST_CACHE, namespace="second"))
    await first.set("k", entry(b"1"))
    await second.set("k", entry(b"2"))
    await first.clear()
    assert await first.get("k") is None
    read = await second.get("k")
    assert read is not None and read.value == b"2"
    await first.aclose()
    await second.aclose()


async def test_near_cache_clear_empties_the_local_layer(
    near_momento_backend: NearCacheBackend, momento: MomentoStandIn
) -> None:
    await near_momento_backend.set("k", entry(b"v"))
    assert near_momento_backend.peek("k") is not None
    await near_momento_backend.clear()
    assert len(near_momento_backend) == 0
    assert await near_momento_backend.get("k") is None


async def test_near_cache_get_many_asks_only_for_what_it_does_not_hold(
    near_momento_backend: NearCacheBackend, momento: MomentoStandIn
) -> None:
    await near_momento_backend.set_many({"a": entry(b"a"), "b": entry(b"b")})
    remote = near_momento_backend.remote
    await remote.set("c", entry(b"c"))
    momento.clear_calls()
    read = await near_momento_backend.get_many(["a", "b", "c", "d"])
    assert [item.value if item else None for item in read] == [b"a", b"b", b"c", None]
    assert momento.calls()["Get"] == 2  # c and d; a and b were held
    momento.clear_calls()
    read = await near_momento_backend.get_many(["a", "c"])
    assert momento.calls()["Get"] == 0  # c is held now too
    await near_momento_backend.delete_many(["a", "c"])
    assert near_momento_backend.peek("a") is None and near_momento_backend.peek("c") is None
    assert await remote.get("a") is None


async def test_a_first_write_after_a_clear_goes_to_the_new_generation(
    momento: MomentoStandIn,
) -> None:
    clearing = MomentoBackend.from_url(momento.url(TEST_CACHE))
    await clearing.clear()
    await asyncio.sleep(0.05)  # let the eager connection of the next backend run first
    fresh = MomentoBackend.from_url(momento.url(TEST_CACHE))
    await fresh.set("k", entry(b"written first"))  # its first operation
    read = await clearing.get("k")
    assert read is not None and read.value == b"written first"
    await clearing.aclose()
    await fresh.aclose()


def test_a_first_write_outside_a_loop_after_a_clear_goes_to_the_new_generation(
    momento: MomentoStandIn,
) -> None:
    clearing = MomentoBackend.from_url(momento.url(TEST_CACHE))
    fresh = MomentoBackend.from_url(momento.url(TEST_CACHE))  # no loop: connects on first use

    async def first_operations() -> Entry | None:
        await clearing.clear()
        await fresh.set("k", entry(b"written first"))
        read = await clearing.get("k")
        await clearing.aclose()
        await fresh.aclose()
        return read

    read = asyncio.run(first_operations())
    assert read is not None and read.value == b"written first"
