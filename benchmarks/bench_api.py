"""Memoized functions and the sync bridge against their peers, as ratios measured in one run.

Run: .venv/bin/python -m benchmarks.bench_api [--quick]

Every figure is a median over many short rounds, contenders interleaved within each round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import polycache
from benchmarks.bench_core import KEY, VALUE, Operation, compare, header
from polycache import Cache

SyncOperation = Callable[[str], Any]


def ratios(results: dict[str, float], baseline: str, goal: str) -> None:
    for name, value in results.items():
        print(f"  {name:<44} {value:9.1f} ns   {value / results[baseline]:6.2f}x {baseline}")
    print(f"  goal: {goal}")


# -- memoized hit -----------------------------------------------------------------------------


async def memoized_contenders() -> dict[str, Operation]:
    from aiocache import cached as aiocache_cached
    from async_lru import alru_cache
    from cashews import Cache as CashewsCache

    floor_dict = {KEY: VALUE}

    async def floor(name: str) -> Any:
        return floor_dict.get(name)

    cache = Cache(ttl=300)

    @cache.cached()
    async def polycache_default(name: str) -> bytes:
        return VALUE

    @cache.cached(key="item:{name}")
    async def polycache_template(name: str) -> bytes:
        return VALUE

    class Repository:
        @cache.cached()
        async def lookup(self, name: str) -> bytes:
            return VALUE

        @alru_cache(maxsize=10_000, ttl=300)
        async def lru_lookup(self, name: str) -> bytes:
            return VALUE

    repository = Repository()

    @alru_cache(maxsize=10_000, ttl=300)
    async def async_lru(name: str) -> bytes:
        return VALUE

    cashews = CashewsCache()
    cashews.setup("mem://")

    @cashews(ttl=300)
    async def cashews_cache(name: str) -> bytes:
        return VALUE

    @aiocache_cached(ttl=300)  # type: ignore[untyped-decorator]
    async def aiocache(name: str) -> bytes:
        return VALUE

    contenders: dict[str, Operation] = {
        "async-lru @alru_cache": async_lru,
        "floor: dict.get in async def": floor,
        "polycache @cache.cached (default key)": polycache_default,
        "polycache @cache.cached(key=template)": polycache_template,
        "polycache @cache.cached method": repository.lookup,
        "async-lru @alru_cache method": repository.lru_lookup,
        "cashews @cache(ttl=...)": cashews_cache,
        "aiocache @cached(ttl=...)": aiocache,
    }
    for operation in contenders.values():
        await operation(KEY)  # loaded once: every measured call is a hit
    return contenders


async def memoized_hit(calls: int, rounds: int) -> None:
    header("memoized call, hit (one str argument)")
    results = await compare(await memoized_contenders(), calls, rounds)
    ratios(
        results,
        "async-lru @alru_cache",
        "polycache @cache.cached <= 1.2x async-lru, faster than cashews @cache",
    )


# -- sync bridge ------------------------------------------------------------------------------


def sync_per_call_ns(operation: SyncOperation, calls: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(calls):
        operation(KEY)
    return (time.perf_counter_ns() - started) / calls


def compare_sync(contenders: dict[str, SyncOperation], calls: int, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for operation in contenders.values():
        sync_per_call_ns(operation, calls // 10)  # warm up
    for _ in range(rounds):
        for name, operation in contenders.items():
            samples[name].append(sync_per_call_ns(operation, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def powertools_get_parameter() -> SyncOperation:
    """Powertools' get_parameter, its cache warm: the real hit path, with no AWS call behind."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS
    from aws_lambda_powertools.utilities.parameters.ssm import SSMProvider

    class WarmProvider(SSMProvider):
        def _get(self, name: str, decrypt: bool = False, **sdk_options: Any) -> str:
            return VALUE.decode()

    DEFAULT_PROVIDERS["ssm"] = WarmProvider()

    def get(name: str) -> Any:
        return parameters.get_parameter(name, max_age=300)

    return get


def sync_contenders() -> dict[str, SyncOperation]:
    cache = Cache(ttl=300)
    cache.sync.set(KEY, VALUE)
    loaded = Cache(ttl=300)

    async def load() -> bytes:
        return VALUE

    def refresh(name: str) -> Any:
        return loaded.sync.refresh(name, load)

    return {
        "Powertools get_parameter (warm)": powertools_get_parameter(),
        "polycache cache.sync.get": cache.sync.get,
        "polycache cache.sync.refresh (runs the loop)": refresh,
    }


async def async_get_ns(calls: int, rounds: int) -> float:
    cache = Cache(ttl=300)
    await cache.set(KEY, VALUE)
    return (await compare({"get": cache.get}, calls, rounds))["get"]


def sync_bridge(calls: int, rounds: int) -> None:
    header("sync bridge, hit (from sync code)")
    results = compare_sync(sync_contenders(), calls, rounds)
    # The same hit from async code, for reference (measured on a loop of its own).
    results["polycache await cache.get (async code)"] = asyncio.run(async_get_ns(calls, rounds))
    ratios(results, "Powertools get_parameter (warm)", "cache.sync.get faster than Powertools")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run, noisy figures")
    arguments = parser.parse_args()
    # Many short rounds: on a shared machine a burst of other work then spoils a few rounds
    # of every contender alike, which the median drops, instead of a whole round of one.
    calls, rounds = (1_000, 3) if arguments.quick else (2_000, 151)
    print(
        f"polycache {polycache.__version__} API benchmark "
        f"({'quick' if arguments.quick else 'full'})"
    )
    asyncio.run(memoized_hit(calls, rounds))
    sync_bridge(calls, rounds)


if __name__ == "__main__":
    main()
