"""Leases: of the caches sharing one backend, one loads a missing key; the others wait for it.

Two Cache objects over one shared fake backend stand for two processes here; the real thing,
with OS processes and real backends, is in tests/fleet_leases.
"""

from __future__ import annotations

import asyncio
import time

from polycache import Cache, Entry, LeaseBackend
from tests.core.fakes import BytesBackend


class LeasingBackend(BytesBackend):
    """A shared bytes backend with set-if-absent."""

    def __init__(self) -> None:
        super().__init__(max_item_bytes=None)
        self.adds: list[str] = []

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        await self._maybe_fail("add", key)
        self.adds.append(key)
        held = self.entries.get(key)
        if held is not None and held.expires_at > time.time():
            return False
        until = time.time() + ttl
        self.entries[key] = Entry(value, until, until, until)
        return True


async def test_one_of_two_caches_loads_and_the_other_waits_for_its_value() -> None:
    backend = LeasingBackend()
    assert isinstance(backend, LeaseBackend)
    first, second = Cache(backend, lease_wait=2), Cache(backend, lease_wait=2)
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return "loaded once"

    results = await asyncio.gather(first.get_or_load("hot", load), second.get_or_load("hot", load))
    assert results == ["loaded once", "loaded once"]
    assert calls == 1
    assert first.stats.lease_waits + second.stats.lease_waits == 1
    assert not [key for key in backend.entries if key.startswith("__polycache_lease__")]


async def test_a_lost_lease_holder_blocks_nobody_past_lease_wait() -> None:
    backend = LeasingBackend()
    holder, other = Cache(backend, lease_wait=0.2), Cache(backend, lease_wait=0.2)

    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    async def load() -> str:
        return "loaded here"

    stuck = asyncio.ensure_future(holder.get_or_load("k", hang))
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    assert await other.get_or_load("k", load) == "loaded here"
    assert 0.2 <= time.perf_counter() - started < 0.5
    stuck.cancel()
    await asyncio.gather(stuck, return_exceptions=True)
    await holder.aclose()


async def test_a_waiter_with_a_stale_value_serves_it_at_once() -> None:
    backend = LeasingBackend()
    writer = Cache(backend, ttl=0.05, stale_ttl=60, lease_wait=2)
    reader = Cache(backend, ttl=0.05, stale_ttl=60, lease_wait=2)
    await writer.set("k", "old")
    await asyncio.sleep(0.06)
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "new"

    assert await writer.get_or_load("k", slow) == "old"  # stale: refresh takes the lease
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    assert await reader.get_or_load("k", slow) == "old"  # stale too; its refresh loses the lease
    assert time.perf_counter() - started < 0.05
    gate.set()
    await asyncio.sleep(0.05)
    assert await reader.get("k") == "new"


async def test_lease_wait_zero_turns_leases_off() -> None:
    backend = LeasingBackend()
    cache = Cache(backend, lease_wait=0)

    async def load() -> int:
        return 1

    assert await cache.get_or_load("k", load) == 1
    assert backend.adds == []


async def test_a_failing_lease_call_loads_here() -> None:
    backend = LeasingBackend()
    cache = Cache(backend, lease_wait=2, backend_timeout=0.1)
    backend.failing = True

    async def load() -> int:
        return 7

    assert await cache.get_or_load("k", load) == 7


def test_lease_wait_comes_from_the_environment() -> None:
    assert Cache(environ={"POLYCACHE_LEASE_WAIT": "0.5"}).settings.lease_wait == 0.5
    assert Cache(environ={}).settings.lease_wait == 2.0
