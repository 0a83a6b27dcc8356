"""LoopBound: one resource per event loop, built once, closed on its own loop."""

from __future__ import annotations

import asyncio

import pytest

from polycache._loop_bound import LoopBound


class Resources:
    def __init__(self) -> None:
        self.created: list[asyncio.AbstractEventLoop] = []
        self.closed: list[tuple[int, bool]] = []

    async def create(self) -> int:
        self.created.append(asyncio.get_running_loop())
        await asyncio.sleep(0.01)
        return len(self.created)

    async def close(self, value: int) -> None:
        # Closed on the loop it was made on, while that loop still runs.
        self.closed.append((value, asyncio.get_running_loop() is self.created[value - 1]))


def test_a_new_loop_gets_a_new_resource_and_the_old_one_is_closed_on_its_loop() -> None:
    resources = Resources()
    bound = LoopBound(resources.create, resources.close)
    assert asyncio.run(bound.get()) == 1
    assert resources.closed == [(1, True)]  # asyncio.run's shutdown closed it
    assert asyncio.run(bound.get()) == 2
    assert resources.closed == [(1, True), (2, True)]


async def test_concurrent_callers_share_one_build() -> None:
    resources = Resources()
    bound = LoopBound(resources.create, resources.close)
    values = await asyncio.gather(*(bound.get() for _ in range(20)))
    assert values == [1] * 20
    assert bound.current == 1


async def test_aclose_closes_and_the_next_get_rebuilds() -> None:
    resources = Resources()
    bound = LoopBound(resources.create, resources.close)
    await bound.get()
    await bound.aclose()
    assert resources.closed == [(1, True)]
    assert bound.current is None
    assert await bound.get() == 2


async def test_a_failed_build_is_retried() -> None:
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("first try fails")
        return "client"

    bound: LoopBound[str] = LoopBound(flaky)
    with pytest.raises(ConnectionError):
        await bound.get()
    assert await bound.get() == "client"
