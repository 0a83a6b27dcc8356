"""Observers receive exactly what the cache does; one that raises changes nothing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

import polycache
from polycache import BaseObserver, Cache, ConfigurationError, LoaderError, Observer
from tests.conftest import FakeClock
from tests.core.fakes import BytesBackend, CountingLoader


class Recorder(BaseObserver):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def hits(self, count: int) -> None:
        self.events.append(("hits", count))

    def lookup(self, key: str, outcome: str) -> None:
        self.events.append(("lookup", key, outcome))

    def load(self, key: str, seconds: float, outcome: str) -> None:
        assert seconds >= 0
        self.events.append(("load", key, outcome))

    def backend_call(self, operation: str, seconds: float, outcome: str) -> None:
        self.events.append(("backend", operation, outcome))

    def invalidation(self, keys: Sequence[str], reason: str) -> None:
        self.events.append(("invalidation", tuple(keys), reason))


class Raising(BaseObserver):
    def __getattribute__(self, name: str) -> Any:
        if name in {"hits", "lookup", "load", "backend_call", "invalidation", "breaker"}:

            def fail(*arguments: object) -> None:
                raise RuntimeError("observer bug")

            return fail
        return super().__getattribute__(name)


async def test_a_recorder_sees_hits_in_aggregate_and_every_other_event(clock: FakeClock) -> None:
    recorder = Recorder()
    cache = Cache(ttl=10, stale_ttl=10, observers=[recorder], clock=clock)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    assert isinstance(recorder, Observer)
    await cache.get("item:a")
    await cache.get("item:a")
    await cache.get("item:a")
    clock.advance(15)
    await cache.get("item:a")  # stale: served, refreshed
    await cache.delete("item:a")
    cache.report()
    assert recorder.events[:2] == [("lookup", "item:a", "miss"), ("load", "item:a", "ok")]
    assert ("hits", 2) in recorder.events
    assert ("lookup", "item:a", "stale") in recorder.events
    assert recorder.events[-1] == ("invalidation", ("item:a",), "delete")


async def test_load_outcomes_are_named(clock: FakeClock) -> None:
    recorder = Recorder()
    cache = Cache(ttl=1, stale_if_error=60, observers=[recorder], clock=clock)
    loader = CountingLoader()
    loader.missing.add("gone")
    cache.register_loader("item", loader)
    await cache.get("item:gone")
    await cache.get("item:a")
    loader.error = RuntimeError("down")
    clock.advance(2)
    await cache.get("item:a")  # stale-if-error
    with pytest.raises(LoaderError):
        await cache.get("item:b")
    outcomes = [event[2] for event in recorder.events if event[0] == "load"]
    assert outcomes == ["not_found", "ok", "stale_served", "error"]


async def test_backend_calls_are_reported_with_their_outcome() -> None:
    recorder = Recorder()
    backend = BytesBackend()
    cache = Cache(backend, observers=[recorder])
    await cache.set("k", 1)
    backend.failing = True
    await cache.get("k")
    calls = [event for event in recorder.events if event[0] == "backend"]
    assert calls == [("backend", "set", "ok"), ("backend", "get", "error")]


async def test_a_raising_observer_changes_nothing_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet = Cache(ttl=60)
    noisy = Cache(ttl=60, observers=[Raising()])
    for cache in (quiet, noisy):
        cache.register_loader("item", CountingLoader())
    with caplog.at_level(logging.WARNING, logger="polycache"):
        for cache in (quiet, noisy):
            assert await cache.get("item:a") == "a#1"
            assert await cache.get("item:a") == "a#1"
            await cache.delete("item:a")
            assert await cache.get("item:a") == "a#2"
            cache.report()
    assert quiet.stats == noisy.stats
    assert len([r for r in caplog.records if "observer" in r.getMessage()]) == 1


def test_an_observer_must_implement_the_protocol() -> None:
    with pytest.raises(ConfigurationError, match="Observer"):
        Cache(observers=[object()])  # type: ignore[list-item]


def test_lambda_handler_reports_the_hits_after_each_invocation() -> None:
    recorder = Recorder()
    cache = Cache(ttl=60, observers=[recorder])
    cache.register_loader("item", CountingLoader())

    @polycache.lambda_handler(cache=cache)
    async def handler(event: Any, context: Any) -> Any:
        return [await cache.get("item:a") for _ in range(3)]

    handler({}, None)
    assert recorder.events[-1] == ("hits", 2)
