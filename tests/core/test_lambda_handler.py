"""lambda_handler keeps one event loop per execution environment."""

from __future__ import annotations

import asyncio

import pytest

import polycache
from polycache import Cache, ConfigurationError
from tests.conftest import FakeClock
from tests.core.fakes import CountingLoader


def test_every_invocation_runs_on_the_same_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    @polycache.lambda_handler
    async def handler(event: dict[str, int], context: object) -> int:
        loops.append(asyncio.get_running_loop())
        return event["n"] * 2

    assert [handler({"n": n}, None) for n in range(3)] == [0, 2, 4]
    assert loops[0] is loops[1] is loops[2]
    assert handler.__name__ == "handler"


def test_a_background_refresh_survives_between_invocations() -> None:
    clock = FakeClock()
    cache = Cache(ttl=1, stale_ttl=60, clock=clock)
    loader = CountingLoader(delay=0.02)
    cache.register_loader("item", loader)

    @polycache.lambda_handler
    async def handler(event: dict[str, float], context: object) -> object:
        if event.get("wait"):
            await asyncio.sleep(event["wait"])
        return await cache.get("item:x")

    assert handler({}, None) == "x#1"
    clock.advance(2)
    assert handler({}, None) == "x#1"  # stale, refresh started and still running on return
    assert handler({"wait": 0.05}, None) == "x#2"  # it finished on the same loop
    assert loader.calls == ["x", "x"]


def test_sync_handlers_are_refused() -> None:
    def handler(event: object, context: object) -> None:
        return None

    with pytest.raises(ConfigurationError, match="async def"):
        polycache.lambda_handler(handler)  # type: ignore[arg-type]
