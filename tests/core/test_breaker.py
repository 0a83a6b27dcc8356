"""The circuit breaker: a dead backend costs microseconds per call once the circuit is open."""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest

from polycache import BackendError, BaseObserver, Cache, ConfigurationError
from polycache._breaker import Breaker
from tests.core.fakes import BytesBackend
from tests.stand_ins.extension_process import ExtensionProcess


def test_the_breaker_opens_after_the_threshold_and_probes_once_after_the_cooldown() -> None:
    now = [0.0]
    changes: list[str] = []
    breaker = Breaker(3, 10.0, changes.append, clock=lambda: now[0])

    def state() -> str:  # read afresh each time: mypy would keep the first comparison's narrowing
        return breaker.state

    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    assert state() == "closed"
    breaker.failed()
    assert state() == "open" and not breaker.allow()
    now[0] = 10.0
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one
    breaker.failed()
    assert state() == "open" and not breaker.allow()
    now[0] = 20.0
    assert breaker.allow()
    breaker.succeeded()
    assert state() == "closed"
    assert changes == ["open", "half_open", "open", "half_open", "closed"]


class BreakerRecorder(BaseObserver):
    def __init__(self) -> None:
        self.states: list[str] = []
        self.skipped = 0

    def breaker(self, state: Any) -> None:
        self.states.append(state)

    def backend_call(self, operation: str, seconds: float, outcome: Any) -> None:
        self.skipped += outcome == "skipped"


async def test_an_open_breaker_skips_the_backend_and_reports_it() -> None:
    backend = BytesBackend()
    backend.failing = True
    recorder = BreakerRecorder()
    cache = Cache(backend, breaker_threshold=2, breaker_cooldown=60, observers=[recorder])
    for _ in range(5):
        assert await cache.get("k") is None
    assert [operation for operation, _ in backend.calls] == ["get", "get"]
    stats = cache.stats
    assert (stats.backend_errors, stats.backend_skipped, stats.breaker) == (2, 3, "open")
    assert recorder.states == ["open"] and recorder.skipped == 3
    closed = Cache(backend, breaker_threshold=2, fail_open=False)
    for _ in range(2):
        with pytest.raises(BackendError, match="down"):
            await closed.get("k")
    with pytest.raises(BackendError, match="circuit is open"):
        await closed.get("k")


def test_breaker_arguments_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="breaker_threshold"):
        Cache(breaker_threshold=-1)
    with pytest.raises(ConfigurationError, match="breaker_cooldown"):
        Cache(breaker_cooldown=0)
    assert Cache("memory://").stats.breaker == "closed"


@pytest.fixture
def own_extension() -> Iterator[ExtensionProcess]:
    process = ExtensionProcess({}).start()
    yield process
    process.close()


async def test_a_frozen_extension_costs_one_timeout_per_call_until_the_circuit_opens(
    own_extension: ExtensionProcess,
) -> None:
    cache = Cache(
        f"extension://127.0.0.1:{own_extension.port}",
        backend_timeout=0.2,
        breaker_threshold=3,
        breaker_cooldown=0.5,
    )
    await cache.set("k", "v")
    own_extension.send_signal(signal.SIGSTOP)
    try:
        first: list[float] = []
        for number in range(3):
            started = time.perf_counter()
            assert await cache.get(f"frozen-{number}") is None
            first.append(time.perf_counter() - started)
        assert max(first) <= 0.2 * 1.5
        assert cache.stats.breaker == "open"
        costs: list[float] = []
        for number in range(100):
            started = time.perf_counter()
            assert await cache.get(f"open-{number}") is None
            costs.append(time.perf_counter() - started)
        assert statistics.median(costs) < 0.001
    finally:
        own_extension.send_signal(signal.SIGCONT)
    await asyncio.sleep(0.5)
    assert await cache.get("k") == "v"  # the probe succeeds
    assert cache.stats.breaker == "closed"
    await cache.aclose()
