"""The extension's key/value store: bounded by entries and by bytes, expiry on read."""

from __future__ import annotations

import pytest

from polycache import ConfigurationError, Entry
from polycache.extension._settings import read_settings
from polycache.extension._store import Store
from tests.conftest import FakeClock


def entry(value: bytes, clock: FakeClock, ttl: float = 60.0) -> Entry:
    return Entry(value, clock.now + ttl, clock.now + ttl, clock.now + ttl)


def test_bytes_bound_drops_the_least_recently_used(clock: FakeClock) -> None:
    store = Store(max_entries=100, max_bytes=3 * (1000 + 200 + 2), clock=clock)
    for name in ("k1", "k2", "k3"):
        store.put(name, entry(b"x" * 1000, clock))
    assert store.get("k1") is not None  # k1 is now the most recently used
    store.put("k4", entry(b"x" * 1000, clock))
    assert store.get("k2") is None
    assert [name for name in ("k1", "k3", "k4") if store.get(name) is not None] == [
        "k1",
        "k3",
        "k4",
    ]
    assert store.size <= store.max_bytes


def test_entries_bound(clock: FakeClock) -> None:
    store = Store(max_entries=2, max_bytes=10**9, clock=clock)
    for name in ("a", "b", "c"):
        store.put(name, entry(b"v", clock))
    assert len(store) == 2
    assert store.get("a") is None


def test_overwrite_delete_and_clear_keep_the_count_right(clock: FakeClock) -> None:
    store = Store(max_entries=10, max_bytes=10**6, clock=clock)
    store.put("k", entry(b"x" * 100, clock))
    store.put("k", entry(b"x" * 10, clock))
    assert store.size == len("k") + 10 + 200
    store.delete("k")
    store.delete("k")
    assert store.size == 0
    store.put("k", entry(b"x", clock))
    store.clear()
    assert (len(store), store.size) == (0, 0)


def test_expired_entries_are_gone_and_uncounted(clock: FakeClock) -> None:
    store = Store(max_entries=10, max_bytes=10**6, clock=clock)
    store.put("k", entry(b"v", clock, ttl=1.0))
    clock.advance(1.0)
    assert store.get("k") is None
    assert store.size == 0


def test_max_bytes_setting() -> None:
    assert read_settings({"POLYCACHE_EXTENSION_MAX_BYTES": "2000000"}).max_bytes == 2_000_000
    with pytest.raises(ConfigurationError, match="POLYCACHE_EXTENSION_MAX_ITEM_BYTES"):
        read_settings({"POLYCACHE_EXTENSION_MAX_BYTES": "1000"})
