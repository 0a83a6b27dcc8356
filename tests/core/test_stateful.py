"""A property-based model check: the Cache behaves like a dict with expiry times."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from polycache import Cache, ConfigurationError, SourceNotFound
from polycache._memoize import Cached
from polycache.backends.memory import MemoryBackend
from tests.conftest import FakeClock
from tests.core.fakes import BytesBackend

# "m:" keys are the template-keyed memoized function's: set, delete and get reach them too.
KEYS = st.sampled_from(["a", "b", "c", "src:a", "src:b", "src:gone", "m:a", "m:gone"])
KEY_LISTS = st.lists(KEYS, max_size=4)
NAMES = st.sampled_from(["a", "b", "gone"])
NOT_FOUND = object()
VALUES = st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=3)
TTLS = st.none() | st.integers(min_value=0, max_value=20)
CACHE_TTL = 10
NEGATIVE_TTL = 5


class CacheModel(RuleBasedStateMachine):
    """Model: key -> (value, fresh_until); loader and memoized calls counted per name."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.remote = False
        self.model: dict[str, tuple[Any, float]] = {}
        self.loads: dict[str, int] = {}
        self.memo_calls: dict[str, int] = {}
        self.cache = self._new_cache(remote=False)

    def _new_cache(self, *, remote: bool) -> Cache:
        self.remote = remote
        backend = BytesBackend(max_item_bytes=None) if remote else MemoryBackend(clock=self.clock)
        cache = Cache(
            backend,
            ttl=CACHE_TTL,
            stale_ttl=0,
            negative_ttl=NEGATIVE_TTL,
            clock=self.clock,
        )

        async def load(name: str) -> str:
            if name == "gone":
                raise SourceNotFound(name)
            self.loads[name] = self.loads.get(name, 0) + 1
            return f"{name}-{self.loads[name]}"

        cache.register_loader("src", load)

        async def memoized(name: str) -> str:
            if name == "gone":
                raise SourceNotFound(name)
            self.memo_calls[name] = self.memo_calls.get(name, 0) + 1
            return f"memo-{name}-{self.memo_calls[name]}"

        self.templated: Cached[[str], str] = cache.cached(key="m:{name}")(memoized)
        self.default_keyed: Cached[[str], str] = cache.cached()(memoized)
        return cache

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.loop.close()

    def _fresh(self, key: str) -> tuple[Any, float] | None:
        held = self.model.get(key)
        if held is not None and self.clock.now < held[1]:
            return held
        self.model.pop(key, None)
        return None

    def _stored(self, key: str, value: Any, ttl: int | None) -> None:
        self.model[key] = (value, self.clock.now + (CACHE_TTL if ttl is None else ttl))

    # -- writes -------------------------------------------------------------------------------

    @rule(remote=st.booleans())
    @precondition(lambda self: not self.model)
    def choose_backend(self, remote: bool) -> None:
        self.cache = self._new_cache(remote=remote)
        self.loads.clear()
        self.memo_calls.clear()

    @rule(key=KEYS, value=VALUES, ttl=TTLS)
    def set(self, key: str, value: Any, ttl: int | None) -> None:
        self.run(self.cache.set(key, value, ttl=ttl))
        self._stored(key, value, ttl)

    @rule(mapping=st.dictionaries(KEYS, VALUES, max_size=4), ttl=TTLS)
    def set_many(self, mapping: dict[str, Any], ttl: int | None) -> None:
        self.run(self.cache.set_many(mapping, ttl=ttl))
        for key, value in mapping.items():
            self._stored(key, value, ttl)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.run(self.cache.delete(key))
        self.model.pop(key, None)

    @rule(keys=KEY_LISTS)
    def delete_many(self, keys: list[str]) -> None:
        self.run(self.cache.delete_many(keys))
        for key in keys:
            self.model.pop(key, None)

    @rule()
    def clear(self) -> None:
        if self.remote:
            # A bytes backend without ClearableBackend cannot tell polycache's keys apart.
            with pytest.raises(ConfigurationError, match="clear"):
                self.run(self.cache.clear())
            return
        self.run(self.cache.clear())
        self.model.clear()

    @rule(seconds=st.sampled_from([0.5, 1, 5, 10, 30]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- reads --------------------------------------------------------------------------------

    def _expect_read(self, key: str, got: Any, sentinel: object, held: Any) -> None:
        """Check a get that found `held` (a fresh model entry) or, if None, had to miss."""
        if held is not None:
            assert got is sentinel if held[0] is NOT_FOUND else got == held[0]
            return
        if not key.startswith("src:"):
            assert got is sentinel  # a plain key (or a memoized one, read by get): no loader
            return
        name = key.partition(":")[2]
        if name == "gone":
            assert got is sentinel
            self.model[key] = (NOT_FOUND, self.clock.now + NEGATIVE_TTL)
            return
        expected = f"{name}-{self.loads[name]}"
        assert got == expected
        self._stored(key, expected, None)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        sentinel = object()
        got = self.run(self.cache.get(key, sentinel))
        self._expect_read(key, got, sentinel, self._fresh(key))

    @rule(key=KEYS, max_age=st.sampled_from([0, 1, 5, 10, 30]))
    def get_with_max_age(self, key: str, max_age: int) -> None:
        sentinel = object()
        loads_before = dict(self.loads)
        got = self.run(self.cache.get(key, sentinel, max_age=max_age))
        held = self._fresh(key)
        # Policy.too_old reads an entry's write time as fresh_until - ttl, the ttl of the key's
        # loader (or the cache's): here both are CACHE_TTL.
        if held is not None and (max_age == 0 or self.clock.now - (held[1] - CACHE_TTL) >= max_age):
            if not key.startswith("src:"):
                assert got is sentinel
                return  # too old for this call, but still there for the others
            held = None  # reloaded
        self._expect_read(key, got, sentinel, held)
        if held is not None:
            assert self.loads == loads_before

    @rule(key=KEYS)
    def exists(self, key: str) -> None:
        held = self._fresh(key)
        assert self.run(self.cache.exists(key)) is (held is not None and held[0] is not NOT_FOUND)

    # -- memoized functions -------------------------------------------------------------------

    def _expect_call(self, key: str, name: str, call: Any) -> None:
        held = self._fresh(key)
        calls_before = self.memo_calls.get(name, 0)
        if (held is None and name == "gone") or (held is not None and held[0] is NOT_FOUND):
            with pytest.raises(SourceNotFound):
                self.run(call)
            if held is None:
                self.model[key] = (NOT_FOUND, self.clock.now + NEGATIVE_TTL)
            return
        got = self.run(call)
        if held is not None:
            assert got == held[0]
            assert self.memo_calls.get(name, 0) == calls_before
            return
        assert got == f"memo-{name}-{calls_before + 1}"
        assert self.run(self.cache.exists(key))  # stored under the key that .key() names
        self._stored(key, got, None)

    @rule(name=NAMES)
    def call_templated(self, name: str) -> None:
        key = self.templated.key(name)
        assert key == f"m:{name}"
        self._expect_call(key, name, self.templated(name))

    @rule(name=NAMES)
    def call_default_keyed(self, name: str) -> None:
        key = self.default_keyed.key(name)
        assert key.endswith(f'memoized:["{name}"]')
        self._expect_call(key, name, self.default_keyed(name))

    @rule(name=NAMES)
    def invalidate_default_keyed(self, name: str) -> None:
        self.run(self.default_keyed.invalidate(name))
        self.model.pop(self.default_keyed.key(name), None)

    @invariant()
    def counters_add_up(self) -> None:
        stats = self.cache.stats
        assert stats.loads >= sum(self.loads.values()) + sum(self.memo_calls.values())
        assert stats.backend_errors == 0
        assert stats.load_errors == 0


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
