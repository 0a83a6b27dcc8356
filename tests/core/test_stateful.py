"""A property-based model check: the Cache behaves like a dict with expiry times."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from polycache import Cache, SourceNotFound
from polycache.backends.memory import MemoryBackend
from tests.conftest import FakeClock
from tests.core.fakes import BytesBackend

KEYS = st.sampled_from(["a", "b", "c", "src:a", "src:b", "src:gone"])
NOT_FOUND = object()
VALUES = st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=3)


class CacheModel(RuleBasedStateMachine):
    """Model: key -> (value, fresh_until, stale_until); loader results counted per name."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.remote = False
        self.cache = self._new_cache(remote=False)
        self.model: dict[str, tuple[Any, float, float]] = {}
        self.loads: dict[str, int] = {}

    def _new_cache(self, *, remote: bool) -> Cache:
        backend = BytesBackend(max_item_bytes=None) if remote else MemoryBackend(clock=self.clock)
        cache = Cache(
            backend,
            ttl=10,
            stale_ttl=0,
            negative_ttl=5,
            clock=self.clock,
        )

        async def load(name: str) -> str:
            if name == "gone":
                raise SourceNotFound(name)
            self.loads[name] = self.loads.get(name, 0) + 1
            return f"{name}-{self.loads[name]}"

        cache.register_loader("src", load)
        return cache

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.loop.close()

    @rule(remote=st.booleans())
    @precondition(lambda self: not self.model)
    def choose_backend(self, remote: bool) -> None:
        self.cache = self._new_cache(remote=remote)
        self.loads.clear()

    @rule(key=KEYS, value=VALUES, ttl=st.integers(min_value=0, max_value=20))
    def set(self, key: str, value: Any, ttl: int) -> None:
        self.run(self.cache.set(key, value, ttl=ttl))
        self.model[key] = (value, self.clock.now + ttl, self.clock.now + ttl)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.run(self.cache.delete(key))
        self.model.pop(key, None)

    @rule(seconds=st.sampled_from([0.5, 1, 5, 10, 30]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        sentinel = object()
        got = self.run(self.cache.get(key, sentinel))
        held = self.model.get(key)
        if held is not None and self.clock.now < held[1]:
            if held[0] is NOT_FOUND:
                assert got is sentinel
            else:
                assert got == held[0]
            return
        if not key.startswith("src:"):
            assert got is sentinel
            self.model.pop(key, None)
            return
        name = key.partition(":")[2]
        if name == "gone":
            assert got is sentinel
            self.model[key] = (NOT_FOUND, self.clock.now + 5, self.clock.now + 5)
            return
        expected = f"{name}-{self.loads[name]}"
        assert got == expected
        self.model[key] = (expected, self.clock.now + 10, self.clock.now + 10)

    @invariant()
    def counters_add_up(self) -> None:
        stats = self.cache.stats
        assert stats.loads >= sum(self.loads.values())
        assert stats.backend_errors == 0
        assert stats.load_errors == 0


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
