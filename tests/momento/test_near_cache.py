"""The near-cache: hot keys answered in process, never past their freshness or local_ttl."""

from __future__ import annotations

import pytest

from polycache import Backend, Cache, ConfigurationError, Entry
from polycache.backends.momento import MomentoBackend
from polycache.backends.near import NearCacheBackend
from tests.conftest import FakeClock
from tests.stand_ins.momento_fixtures import TEST_CACHE, connected
from tests.stand_ins.momento_server import MomentoStandIn


class RemoteDouble:
    """A remote backend in memory that counts calls and can fail its writes."""

    stores_objects = False
    max_item_bytes = 1000

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.entries: dict[str, Entry] = {}
        self.gets = 0
        self.fail_sets = False

    async def get(self, key: str) -> Entry | None:
        self.gets += 1
        entry = self.entries.get(key)
        return None if entry is None or entry.expires_at <= self.clock() else entry

    async def set(self, key: str, entry: Entry) -> None:
        if self.fail_sets:
            raise OSError("remote down")
        self.entries[key] = entry

    async def delete(self, key: str) -> None:
        self.entries.pop(key, None)

    async def aclose(self) -> None:
        pass


def entry_at(clock: FakeClock, value: bytes, *, fresh: float, stale: float = 0.0) -> Entry:
    now = clock()
    return Entry(value, now + fresh, now + fresh + stale, now + fresh + stale)


@pytest.fixture
def remote(clock: FakeClock) -> RemoteDouble:
    return RemoteDouble(clock)


def near(remote: Backend, clock: FakeClock, **options: float) -> NearCacheBackend:
    return NearCacheBackend(remote, clock=clock, **options)  # type: ignore[arg-type]


async def test_hits_cost_no_remote_call(remote: RemoteDouble, clock: FakeClock) -> None:
    backend = near(remote, clock, local_ttl=30)
    remote.entries["k"] = entry_at(clock, b"v", fresh=60)
    for _ in range(5):
        read = await backend.get("k")
        assert read is not None and read.value == b"v"
    assert remote.gets == 1
    assert backend.peek("k") is not None
    assert backend.peek("other") is None
    assert remote.gets == 1


async def test_never_served_locally_past_fresh_until(
    remote: RemoteDouble, clock: FakeClock
) -> None:
    backend = near(remote, clock, local_ttl=300)
    await backend.set("k", entry_at(clock, b"v", fresh=5, stale=100))
    clock.advance(4)
    assert await backend.get("k") is not None
    assert remote.gets == 0
    clock.advance(2)  # stale now: the remote may hold a refresh another process stored
    remote.entries["k"] = entry_at(clock, b"refreshed", fresh=60)
    read = await backend.get("k")
    assert read is not None and read.value == b"refreshed"
    assert remote.gets == 1


async def test_held_at_most_local_ttl(remote: RemoteDouble, clock: FakeClock) -> None:
    backend = near(remote, clock, local_ttl=2)
    await backend.set("k", entry_at(clock, b"mine", fresh=600))
    remote.entries["k"] = entry_at(clock, b"another process", fresh=600)
    read = await backend.get("k")
    assert read is not None and read.value == b"mine"
    clock.advance(2.5)
    read = await backend.get("k")
    assert read is not None and read.value == b"another process"


async def test_expired_entries_are_not_held(remote: RemoteDouble, clock: FakeClock) -> None:
    backend = near(remote, clock, local_ttl=60)
    await backend.set("k", entry_at(clock, b"v", fresh=0))
    assert len(backend) == 0


async def test_bounded_by_local_max_entries(remote: RemoteDouble, clock: FakeClock) -> None:
    backend = NearCacheBackend(remote, local_max_entries=2, local_ttl=60, clock=clock)
    for key in ("a", "b", "c"):
        await backend.set(key, entry_at(clock, key.encode(), fresh=60))
    assert len(backend) == 2
    await backend.get("a")  # evicted first, so it costs a remote read
    assert remote.gets == 1
    await backend.get("c")
    assert remote.gets == 1


async def test_delete_and_failed_writes_drop_the_local_copy(
    remote: RemoteDouble, clock: FakeClock
) -> None:
    backend = near(remote, clock, local_ttl=60)
    await backend.set("k", entry_at(clock, b"old", fresh=60))
    remote.fail_sets = True
    with pytest.raises(OSError, match="remote down"):
        await backend.set("k", entry_at(clock, b"new", fresh=60))
    assert len(backend) == 0
    remote.fail_sets = False
    await backend.delete("k")
    assert await backend.get("k") is None


async def test_stale_while_revalidate_goes_through_the_remote(
    remote: RemoteDouble, clock: FakeClock
) -> None:
    cache = Cache(near(remote, clock, local_ttl=60), ttl=10, stale_ttl=100, clock=clock)
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        return loads

    assert await cache.get_or_load("k", load) == 1
    clock.advance(11)
    assert await cache.get_or_load("k", load) == 1  # stale: served, one refresh started
    await cache.aclose()  # let the refresh finish or be cancelled; either way it was started
    assert loads >= 1
    assert remote.gets >= 2


def test_options_for_memory_are_an_error() -> None:
    with pytest.raises(ConfigurationError, match="already keeps entries in process"):
        Cache("memory://?local_ttl=5")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("local_ttl=0", "local_ttl"),
        ("local_ttl=-1", "local_ttl"),
        ("local_max_entries=0", "local_max_entries"),
        ("local_max_entries=many", "local_max_entries"),
        ("local_ttl=1&local_ttl=2", "twice"),
    ],
)
def test_bad_near_options(query: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Cache(f"momento://c?endpoint=127.0.0.1:9&{query}")


def test_url_options_wrap_the_remote_backend() -> None:
    cache = Cache("momento://c?local_max_entries=7&endpoint=127.0.0.1:9&local_ttl=1.5")
    backend = cache.backend
    assert isinstance(backend, NearCacheBackend)
    assert backend.local_max_entries == 7
    assert backend.local_ttl == 1.5
    assert isinstance(backend.remote, MomentoBackend)
    assert backend.max_item_bytes == backend.remote.max_item_bytes
    assert "NearCacheBackend(MomentoBackend(cache_name='c'" in repr(cache)


@pytest.mark.momento
async def test_near_hits_over_momento_cost_no_round_trip(momento: MomentoStandIn) -> None:
    url = momento.url(TEST_CACHE, local_max_entries=100, local_ttl=30)
    writer, reader = Cache(url), Cache(url)
    await connected(writer, momento)
    await connected(reader, momento)
    await writer.set("hot", {"n": 1})
    for _ in range(10):
        assert await writer.get("hot") == {"n": 1}
    assert momento.calls()["Get"] == 0
    for _ in range(10):
        assert await reader.get("hot") == {"n": 1}
    assert momento.calls()["Get"] == 1
    await writer.aclose()
    await reader.aclose()


@pytest.mark.momento
async def test_near_cache_over_momento_respects_freshness(momento: MomentoStandIn) -> None:
    cache = Cache(momento.url(TEST_CACHE, local_ttl=30), ttl=0.2)
    await connected(cache, momento)
    await cache.set("k", "v")
    assert await cache.get("k") == "v"
    assert momento.calls()["Get"] == 0
    import asyncio

    await asyncio.sleep(0.3)
    assert await cache.get("k") is None  # expired: the remote was asked, and it agrees
    assert momento.calls()["Get"] == 1
    await cache.aclose()


async def test_bulk_operations_without_a_batch_remote(
    remote: RemoteDouble, clock: FakeClock
) -> None:
    backend = near(remote, clock, local_ttl=30)
    await backend.set_many(
        {"a": entry_at(clock, b"a", fresh=60), "b": entry_at(clock, b"b", fresh=60)}
    )
    assert set(remote.entries) == {"a", "b"}
    remote.entries["c"] = entry_at(clock, b"c", fresh=60)
    read = await backend.get_many(["a", "c", "missing", "b"])
    assert [item.value if item else None for item in read] == [b"a", b"c", None, b"b"]
    assert remote.gets == 2  # c and missing; a and b were held
    await backend.get_many(["c"])
    assert remote.gets == 2
    await backend.delete_many(["a", "c"])
    assert set(remote.entries) == {"b"}
    assert backend.peek("a") is None and backend.peek("c") is None


async def test_clear_needs_a_clearable_remote(remote: RemoteDouble, clock: FakeClock) -> None:
    backend = near(remote, clock, local_ttl=30)
    await backend.set("k", entry_at(clock, b"v", fresh=60))
    with pytest.raises(ConfigurationError, match="RemoteDouble cannot clear"):
        await backend.clear()
    assert backend.peek("k") is not None  # nothing was forgotten half-way
