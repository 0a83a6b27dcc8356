"""polycache's core against the in-process peers, as ratios measured in one run.

Run: .venv/bin/python -m benchmarks.bench_core [--quick] [--json PATH]

`--json PATH` also writes every figure as data (scripts/charts.py draws the docs' charts from it).

Every figure is a median over rounds, and contenders are interleaved within each round so that
a noisy neighbour slows them all alike. Ratios are to the floor: the least an async cache can do.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import polycache
from polycache import BaseObserver, Cache

Operation = Callable[[str], Awaitable[Any]]

KEY = "key:hot"
VALUE = b"x" * 100

# Every figure of the run, as data for --json: one entry per section.
FIGURES: list[dict[str, Any]] = []


def header(title: str) -> None:
    print(f"\n## {title}")


def record(
    figure: str,
    title: str,
    unit: str,
    rows: dict[str, float],
    baseline: str | None,
    goal: str = "",
) -> None:
    """Keep one figure: its rows (name -> value, lower is better) and what ratios are to."""
    FIGURES.append(
        {
            "id": figure,
            "title": title,
            "unit": unit,
            "baseline": baseline,
            "goal": goal,
            "rows": rows,
        }
    )


def table(
    figure: str,
    title: str,
    results: dict[str, float],
    baseline: str,
    unit: str,
    goal: str = "",
    of: str = "floor",
) -> None:
    header(title)
    floor = results[baseline]
    rows = sorted(results.items(), key=lambda item: item[1])
    for name, value in rows:
        print(f"  {name:<44} {value:10.1f} {unit}   {value / floor:6.2f}x {of}")
    if goal:
        print(f"  goal: {goal}")
    record(figure, title, unit, dict(rows), baseline, goal)


async def per_call_ns(operation: Operation, calls: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(calls):
        await operation(KEY)
    return (time.perf_counter_ns() - started) / calls


async def compare(contenders: dict[str, Operation], calls: int, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for operation in contenders.values():
        await per_call_ns(operation, calls // 10)  # warm up
    for _ in range(rounds):
        for name, operation in contenders.items():
            samples[name].append(await per_call_ns(operation, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


# -- contenders -------------------------------------------------------------------------------


async def hit_contenders() -> dict[str, Operation]:
    import cachetools
    from aiocache import SimpleMemoryCache
    from async_lru import alru_cache
    from aws_lambda_powertools.utilities.parameters.base import BaseProvider
    from cashews import Cache as CashewsCache
    from lambda_cache import caching_logic

    floor_dict = {KEY: VALUE}

    async def floor(key: str) -> Any:
        return floor_dict.get(key)

    cache = Cache(ttl=300)
    await cache.set(KEY, VALUE)

    ttl_cache: cachetools.TTLCache[str, bytes] = cachetools.TTLCache(maxsize=10_000, ttl=300)
    ttl_cache[KEY] = VALUE

    async def cachetools_get(key: str) -> Any:
        return ttl_cache.get(key)

    aiocache = SimpleMemoryCache()
    await aiocache.set(KEY, VALUE, ttl=300)
    cashews = CashewsCache()
    cashews.setup("mem://")
    await cashews.set(KEY, VALUE, expire=300)

    @alru_cache(maxsize=10_000, ttl=300)
    async def async_lru_get(key: str) -> Any:
        return VALUE

    class Provider(BaseProvider):  # type: ignore[misc]
        def _get(self, name: str, **options: Any) -> bytes:
            return VALUE

        def _get_multiple(self, path: str, **options: Any) -> dict[str, bytes]:
            return {}

    provider = Provider()

    async def powertools_get(key: str) -> Any:
        return provider.get(key, max_age=300)

    async def lambda_cache_get(key: str) -> Any:
        return caching_logic.get_value(
            argument=key, max_age_in_seconds=300, entry_name=None, miss_function=lambda k: VALUE
        )

    return {
        "floor: dict.get in async def": floor,
        "polycache Cache.get": cache.get,
        "async-lru": async_lru_get,
        "cachetools TTLCache": cachetools_get,
        "Powertools BaseProvider.get": powertools_get,
        "lambda-cache get_value": lambda_cache_get,
        "cashews mem://": cashews.get,
        "aiocache SimpleMemoryCache": aiocache.get,
    }


async def observer_contenders() -> dict[str, Operation]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from polycache.otel import OpenTelemetryObserver

    plain = Cache(ttl=300)
    no_op = Cache(ttl=300, observers=[BaseObserver()])
    opentelemetry = Cache(
        ttl=300,
        observers=[
            OpenTelemetryObserver(
                meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
                tracer_provider=TracerProvider(),
            )
        ],
    )
    for cache in (plain, no_op, opentelemetry):
        await cache.set(KEY, VALUE)
    return {
        "polycache Cache.get, no observer": plain.get,
        "polycache Cache.get, one no-op observer": no_op.get,
        "polycache Cache.get, OpenTelemetry adapter": opentelemetry.get,
    }


async def get_or_load_contenders() -> dict[str, Operation]:
    from aiocache import SimpleMemoryCache
    from cashews import Cache as CashewsCache

    floor_dict: dict[str, bytes] = {}
    floor_loads: dict[str, asyncio.Future[bytes]] = {}

    async def load() -> bytes:
        return VALUE

    async def floor(key: str) -> Any:
        # The least a single-flight get-or-load can do: a dict hit, else one shared future.
        value = floor_dict.get(key)
        if value is not None:
            return value
        future = floor_loads.get(key)
        if future is None:
            future = asyncio.ensure_future(load())
            floor_loads[key] = future
        value = await future
        floor_dict[key] = value
        return value

    cache = Cache(ttl=300)

    def polycache_get_or_load(key: str) -> Awaitable[Any]:
        # A plain function returning the coroutine: no extra coroutine frame, like the floor.
        return cache.get_or_load(key, load)

    aiocache = SimpleMemoryCache()

    async def aiocache_get_or_set(key: str) -> Any:
        value = await aiocache.get(key)
        if value is None:
            value = await load()
            await aiocache.set(key, value, ttl=300)
        return value

    cashews = CashewsCache()
    cashews.setup("mem://")

    @cashews(ttl=300, lock=True)
    async def cashews_cached(key: str) -> Any:
        return await load()

    return {
        "floor: dict + shared future": floor,
        "polycache get_or_load": polycache_get_or_load,
        "aiocache get-then-set (no lock)": aiocache_get_or_set,
        "cashews @cache(lock=True)": cashews_cached,
    }


async def get_many_contenders() -> dict[str, Operation]:
    cache = Cache("memory://", ttl=3600)
    keys = [f"many:{n}" for n in range(10)]
    for key in keys:
        await cache.set(key, VALUE)

    async def ten_gets(key: str) -> Any:
        get = cache.get
        return [await get(one) for one in keys]

    def one_get_many(key: str) -> Awaitable[Any]:
        return cache.get_many(keys)

    return {"ten hit get() calls": ten_gets, "polycache Cache.get_many": one_get_many}


async def set_contenders() -> dict[str, Operation]:
    import cachetools
    from aiocache import SimpleMemoryCache
    from cashews import Cache as CashewsCache

    floor_dict: dict[str, bytes] = {}

    async def floor(key: str) -> None:
        floor_dict[key] = VALUE

    cache = Cache(ttl=300)

    def polycache_set(key: str) -> Awaitable[None]:
        return cache.set(key, VALUE)

    ttl_cache: cachetools.TTLCache[str, bytes] = cachetools.TTLCache(maxsize=10_000, ttl=300)

    async def cachetools_set(key: str) -> None:
        ttl_cache[key] = VALUE

    aiocache = SimpleMemoryCache()
    cashews = CashewsCache()
    cashews.setup("mem://")

    def aiocache_set(key: str) -> Awaitable[Any]:
        return aiocache.set(key, VALUE, ttl=300)

    def cashews_set(key: str) -> Awaitable[Any]:
        return cashews.set(key, VALUE, expire=300)

    return {
        "floor: dict[key] = value": floor,
        "polycache Cache.set": polycache_set,
        "cachetools TTLCache": cachetools_set,
        "cashews mem://": cashews_set,
        "aiocache SimpleMemoryCache": aiocache_set,
    }


# -- scenarios --------------------------------------------------------------------------------


async def one_stampede(key: str, calls: dict[str, int]) -> dict[str, float]:
    """One stampede per contender on a fresh key; returns each contender's wall time."""
    from async_lru import alru_cache

    async def slow_load(name: str) -> bytes:
        calls[name] += 1
        await asyncio.sleep(0.02)
        return VALUE

    loads: dict[str, asyncio.Future[bytes]] = {}

    async def floor() -> bytes:
        future = loads.get(key)
        if future is None:
            future = asyncio.ensure_future(slow_load("floor single-flight"))
            loads[key] = future
        return await future

    cache = Cache()

    def polycache_call() -> Awaitable[bytes]:
        return cache.get_or_load(key, lambda: slow_load("polycache"))

    @alru_cache(maxsize=100)
    async def async_lru_call(name: str) -> bytes:
        return await slow_load("async-lru")

    walls: dict[str, float] = {}
    for name, function in (
        ("floor single-flight", floor),
        ("polycache", polycache_call),
        ("async-lru", lambda: async_lru_call(key)),
    ):
        started = time.perf_counter()
        results = await asyncio.gather(*(function() for _ in range(1000)))
        walls[name] = time.perf_counter() - started
        assert all(result == VALUE for result in results)
    return walls


async def stampede(rounds: int) -> None:
    header("stampede: 1000 concurrent get_or_load of one missing key, loader sleeps 20 ms")
    names = ("floor single-flight", "polycache", "async-lru")
    walls: dict[str, list[float]] = {name: [] for name in names}
    calls: dict[str, int] = dict.fromkeys(names, 0)
    for round_number in range(rounds):
        for name, wall in (await one_stampede(f"stampede-{round_number}", calls)).items():
            walls[name].append(wall)
    floor_wall = statistics.median(walls["floor single-flight"])
    rows: dict[str, float] = {}
    for name, values in walls.items():
        wall = statistics.median(values)
        rows[name] = wall * 1000
        print(
            f"  {name:<22} wall {wall * 1000:7.1f} ms  {wall / floor_wall:5.2f}x floor   "
            f"loader calls per stampede: {calls[name] / rounds:.0f}"
        )
    goal = "exactly 1 loader call; wall within 1.2x of the floor's single-flight"
    print(f"  goal: {goal}")
    record(
        "stampede",
        "stampede: 1000 concurrent misses, 20 ms loader",
        "ms",
        rows,
        "floor single-flight",
        goal,
    )


async def stale_while_revalidate(samples: int) -> None:
    header("stale-while-revalidate: callers arriving while a 50 ms refresh runs")
    clock_offset = [0.0]

    def clock() -> float:
        return time.time() + clock_offset[0]

    cache = Cache(ttl=1, stale_ttl=3600, clock=clock)

    async def slow_source(name: str) -> bytes:
        await asyncio.sleep(0.05)
        return VALUE

    cache.register_loader("src", slow_source)
    await cache.get("src:a")
    hit_latencies, stale_latencies = [], []
    for _ in range(samples):
        started = time.perf_counter_ns()
        await cache.get("src:a")
        hit_latencies.append(time.perf_counter_ns() - started)
    clock_offset[0] += 2  # now stale: the first get starts the refresh
    for _ in range(samples):
        started = time.perf_counter_ns()
        await cache.get("src:a")
        stale_latencies.append(time.perf_counter_ns() - started)
    hit_p99 = statistics.quantiles(hit_latencies, n=100)[98]
    stale_p99 = statistics.quantiles(stale_latencies, n=100)[98]
    print(
        f"  hit p99 {hit_p99:8.0f} ns   stale p99 {stale_p99:8.0f} ns   "
        f"{stale_p99 / hit_p99:5.2f}x a hit (peers without SWR: the full 50 ms)"
    )
    print("  goal: within 3x of a hit")
    record(
        "stale-while-revalidate",
        "stale-while-revalidate: p99 of callers during a 50 ms refresh",
        "ns",
        {"polycache hit": hit_p99, "polycache stale (refresh running)": stale_p99},
        "polycache hit",
        "within 3x of a hit",
    )


def memory_per_entry(entries: int) -> None:
    header(f"memory for {entries:,} entries (str key, 100-byte value, with TTL)")
    import cachetools
    from aiocache import SimpleMemoryCache
    from cashews import Cache as CashewsCache

    keys = [f"key:{index:08d}" for index in range(entries)]
    values = [bytes(100) + index.to_bytes(4, "big") for index in range(entries)]

    def measure(fill: Callable[[], Any]) -> int:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        holder = fill()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del holder
        gc.collect()
        return after - before

    # Keys and values exist before measuring; each contender pays only for its own structure.
    def plain_dict() -> Any:
        return dict(zip(keys, values, strict=True))

    def fill(setter: Callable[[str, bytes], Awaitable[Any]]) -> None:
        async def fill_all() -> None:
            for key, value in zip(keys, values, strict=True):
                await setter(key, value)

        asyncio.run(fill_all())

    def polycache_memory() -> Any:
        backend = polycache.backends.memory.MemoryBackend(max_entries=entries)
        cache = Cache(backend, ttl=300)
        fill(cache.set)
        return cache

    def cachetools_ttl() -> Any:
        ttl_cache: cachetools.TTLCache[str, bytes] = cachetools.TTLCache(entries, ttl=300)
        for key, value in zip(keys, values, strict=True):
            ttl_cache[key] = value
        return ttl_cache

    def cashews_memory() -> Any:
        cashews = CashewsCache()
        cashews.setup("mem://", size=entries)
        fill(lambda key, value: cashews.set(key, value, expire=300))
        return cashews

    def aiocache_memory() -> Any:
        aiocache = SimpleMemoryCache()
        fill(lambda key, value: aiocache.set(key, value, ttl=300))
        return aiocache

    key_bytes = sum(sys.getsizeof(key) for key in keys)
    value_bytes = sum(sys.getsizeof(value) for value in values)
    base_keys_values = key_bytes + value_bytes
    results = {
        "plain dict": measure(plain_dict),
        "polycache memory://": measure(polycache_memory),
        "cachetools TTLCache": measure(cachetools_ttl),
        "cashews mem://": measure(cashews_memory),
        "aiocache SimpleMemoryCache": measure(aiocache_memory),
    }
    floor_total = results["plain dict"] + base_keys_values
    rows: dict[str, float] = {}
    for name, structure in results.items():
        total = structure + base_keys_values
        rows[name] = total / entries
        print(
            f"  {name:<28} {total / entries:7.1f} bytes/entry (keys and values included)   "
            f"{total / floor_total:5.2f}x a plain dict"
        )
    print("  goal: <= 1.7x a plain dict in total bytes")
    record(
        "memory",
        f"memory for {entries:,} entries",
        "bytes/entry",
        dict(sorted(rows.items(), key=lambda item: item[1])),
        "plain dict",
        "<= 1.7x a plain dict",
    )


def import_cost(runs: int) -> None:
    header("import cost over `import asyncio` (fresh interpreter each run)")
    modules = {
        "asyncio alone": "asyncio",
        "polycache": "polycache",
        "async_lru": "async_lru",
        "aiocache": "aiocache",
        "cashews": "cashews",
        "Powertools parameters": "aws_lambda_powertools.utilities.parameters",
    }
    totals: dict[str, list[float]] = {name: [] for name in modules}
    increments: dict[str, list[float]] = {name: [] for name in modules}
    # Bytecode is written and reused, as in a deployment package that ships .pyc files.
    environment = {
        name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"
    }
    for module in modules.values():
        subprocess.run([sys.executable, "-c", f"import {module}"], env=environment, check=True)
    for _ in range(runs):
        for name, module in modules.items():
            # Both the whole import's wall time and the CPU time of the part after asyncio,
            # inside the same process: the second subtracts no two noisy medians and does not
            # count the time a busy neighbour held the CPU, so it is the steadier figure.
            code = (
                "import time; t = time.perf_counter(); import asyncio; u = time.process_time(); "
                f"import {module}; v = time.process_time(); print(time.perf_counter() - t, v - u)"
            )
            output = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                env=environment,
            ).stdout.split()
            totals[name].append(float(output[0]))
            increments[name].append(float(output[1]))
    base = statistics.median(totals["asyncio alone"])
    print(f"  asyncio alone: {base * 1000:.1f} ms (median of {runs} alternated processes)")
    rows: dict[str, float] = {}
    for name, values in totals.items():
        if name != "asyncio alone":
            extra = (statistics.median(values) - base) * 1000
            inside = statistics.median(increments[name]) * 1000
            rows[name] = inside
            print(
                f"  {name:<24} +{extra:6.1f} ms over asyncio  "
                f"({inside:6.1f} ms CPU after asyncio, in process)"
            )
    print("  goal: polycache <= 3 ms over asyncio")
    record(
        "import-cost",
        "import cost after `import asyncio` (CPU in process)",
        "ms",
        dict(sorted(rows.items(), key=lambda item: item[1])),
        None,
        "polycache <= 3 ms over asyncio",
    )


async def per_operation(quick: bool) -> None:
    calls, rounds = (2_000, 3) if quick else (50_000, 9)
    results = await compare(await hit_contenders(), calls, rounds)
    table(
        "hit-get",
        "hit get (value already cached)",
        results,
        "floor: dict.get in async def",
        "ns/op",
        "polycache <= 2.5x",
    )
    # Hits reach observers as one count per report(): the hit path itself does no more work.
    results = await compare(await observer_contenders(), calls, rounds)
    table(
        "hit-get-observers",
        "hit get with observers",
        results,
        "polycache Cache.get, no observer",
        "ns/op",
        "one no-op observer <= 1.1x no observer",
        of="no observer",
    )
    results = await compare(await get_or_load_contenders(), calls, rounds)
    table(
        "hit-get-or-load",
        "hit get_or_load (value already cached; single-flight on a miss)",
        results,
        "floor: dict + shared future",
        "ns/op",
        "polycache <= 3x",
    )
    results = await compare(await get_many_contenders(), calls // 10, rounds)
    table(
        "get-many",
        "get_many of 10 cached keys",
        results,
        "ten hit get() calls",
        "ns/op",
        "get_many <= 1.5x",
        of="ten gets",
    )
    results = await compare(await set_contenders(), calls, rounds)
    table("set", "set", results, "floor: dict[key] = value", "ns/op", "polycache <= 3x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run, noisy figures")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    arguments = parser.parse_args()
    FIGURES.clear()
    print(
        f"polycache {polycache.__version__} core benchmark "
        f"({'quick' if arguments.quick else 'full'})"
    )
    # Each scenario gets a loop of its own: the peers' janitor tasks (cashews, aiocache) stay
    # on the loop they were made on and do not run during the others' measurements.
    asyncio.run(per_operation(arguments.quick))
    gc.collect()
    asyncio.run(stampede(5 if arguments.quick else 15))
    gc.collect()
    asyncio.run(stale_while_revalidate(2_000 if arguments.quick else 20_000))
    gc.collect()
    memory_per_entry(20_000 if arguments.quick else 1_000_000)
    import_cost(3 if arguments.quick else 21)
    if arguments.json is not None:
        data = {
            "benchmark": "bench_core",
            "polycache": polycache.__version__,
            "mode": "quick" if arguments.quick else "full",
            "python": sys.version.split()[0],
            "figures": FIGURES,
        }
        arguments.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nfigures written to {arguments.json}")


if __name__ == "__main__":
    main()
