"""Stampede-proof expiry: `ttl_jitter` on a wave of expiring keys, `early_refresh` on a hot key.

Run: .venv/bin/python -m benchmarks.bench_expiry [--quick]

1. Expiry wave: 10,000 keys loaded together (one `get_many`) expire together unless jittered.
   A fake clock steps through the expiry window; at each step every key is read, concurrently,
   by its own caller, and the loader sleeps 1 ms. Reported: the most loader calls in one step,
   the calls over the window, and the 99th percentile of the gets' latency (over all the
   window's gets, and within the worst step).
   (async-lru's `jitter` is not beside it: its entries expire by `loop.call_later`, which a
   fake clock cannot step.)
2. Hot key: a caller every millisecond for a few seconds reads one key (ttl 0.2 s, a 20 ms
   load). Reported: the fraction of callers that wait (a get slower than 5 ms), and the loads,
   beside async-lru (`ttl`, no early refresh) and cashews' `@cache.early`.

Each figure is the median of several rounds of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import polycache
from benchmarks.bench_core import header
from polycache import Cache

WAVE_TTL = 60.0
LOAD_SECONDS = 0.001
HOT_TTL = 0.2
HOT_LOAD_SECONDS = 0.02
CALLER_INTERVAL = 0.001
WAITED = 0.005

Loader = Callable[[str], Coroutine[Any, Any, str]]


class SteppedClock:
    """An epoch clock that the benchmark moves, step by step."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


Read = Callable[[], Awaitable[Any]]
Close = Callable[[], Awaitable[Any]]


async def timed_read(read: Read, latencies: list[float]) -> None:
    started = time.perf_counter()
    await read()
    latencies.append(time.perf_counter() - started)


def p99(latencies: Sequence[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0]


# -- 1. the expiry wave -----------------------------------------------------------------------


async def expiry_wave(keys: int, steps: int, jitter: float) -> tuple[int, int, float, float]:
    """(peak loader calls in a step, calls in the window, p99 of all gets, worst step's p99)."""
    clock = SteppedClock()
    cache = Cache(ttl=WAVE_TTL, ttl_jitter=jitter, clock=clock)
    calls = 0

    async def load(name: str) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(LOAD_SECONDS)
        return name

    cache.register_loader("item", load)
    names = [f"item:{index}" for index in range(keys)]
    loaded_at = clock.now
    await cache.get_many(names)  # loaded together
    # The window: from before the earliest jittered expiry (ttl * (1 - jitter)) to past the ttl.
    first, last = WAVE_TTL * 0.88, WAVE_TTL * 1.02
    per_step: list[int] = []
    everything: list[float] = []
    step_p99s: list[float] = []
    for step in range(steps):
        clock.now = loaded_at + first + (last - first) * step / (steps - 1)
        before = calls
        latencies: list[float] = []
        await asyncio.gather(
            *(timed_read(functools.partial(cache.get, name), latencies) for name in names)
        )
        per_step.append(calls - before)
        everything += latencies
        step_p99s.append(p99(latencies))
    await cache.aclose()
    return max(per_step), sum(per_step), p99(everything), max(step_p99s)


async def wave(keys: int, steps: int, rounds: int) -> None:
    header(f"expiry wave: {keys} keys loaded together, read at {steps} steps through expiry")
    print(f"  (fake clock, ttl {WAVE_TTL:.0f} s, loader sleeps {LOAD_SECONDS * 1000:.0f} ms)")
    rows: dict[str, tuple[float, float, float, float]] = {}
    samples: dict[str, list[tuple[int, int, float, float]]] = {}
    for _ in range(rounds):
        for jitter in (0.0, 0.1):
            name = f"polycache ttl_jitter={jitter}"
            samples.setdefault(name, []).append(await expiry_wave(keys, steps, jitter))
    for name, runs in samples.items():
        columns = list(zip(*runs, strict=True))
        rows[name] = (
            statistics.median(columns[0]),
            statistics.median(columns[1]),
            statistics.median(columns[2]),
            statistics.median(columns[3]),
        )
    baseline = rows["polycache ttl_jitter=0.0"]
    print(f"  {'':<28} {'peak calls/step':>16} {'calls':>7} {'p99 get':>10} {'worst-step p99':>15}")
    for name, (peak, total, overall, worst) in rows.items():
        print(
            f"  {name:<28} {peak:>16.0f} {total:>7.0f} {overall * 1000:>8.2f} ms"
            f" {worst * 1000:>12.2f} ms   peak {peak / baseline[0]:.2f}x,"
            f" p99 {overall / baseline[2]:.2f}x no jitter"
        )


# -- 2. the hot key ---------------------------------------------------------------------------


def polycache_contender(**options: Any) -> Callable[[Loader], tuple[Read, Close]]:
    def build(load: Loader) -> tuple[Read, Close]:
        cache = Cache(ttl=HOT_TTL, **options)
        cache.register_loader("hot", load)
        return lambda: cache.get("hot:key"), cache.aclose

    return build


def async_lru_contender(load: Loader) -> tuple[Read, Close]:
    from async_lru import alru_cache

    cached = alru_cache(maxsize=16, ttl=HOT_TTL)(load)
    return lambda: cached("key"), cached.cache_close


def cashews_contender(load: Loader) -> tuple[Read, Close]:
    from cashews import Cache as CashewsCache

    cashews = CashewsCache()
    cashews.setup("mem://")
    # Refreshed in the background by the first call after early_ttl, set here to three loads'
    # time before the ttl (polycache derives its moment from the measured load time).
    cached = cashews.early(ttl=HOT_TTL, early_ttl=HOT_TTL - 3 * HOT_LOAD_SECONDS)(load)
    return lambda: cached("key"), cashews.close


HOT_CONTENDERS: dict[str, Callable[[Loader], tuple[Read, Close]]] = {
    "polycache (expires, then one load)": polycache_contender(),
    "polycache early_refresh=True": polycache_contender(early_refresh=True),
    "polycache stale_ttl=1 (serves past ttl)": polycache_contender(stale_ttl=1.0),
    "async-lru alru_cache(ttl=...)": async_lru_contender,
    "cashews @cache.early(early_ttl=ttl-60ms)": cashews_contender,
}


async def hot_key(
    build: Callable[[Loader], tuple[Read, Close]], seconds: float
) -> tuple[float, int]:
    """(fraction of callers whose read took over 5 ms, loader calls)."""
    loads = 0

    async def load(name: str) -> str:
        nonlocal loads
        loads += 1
        await asyncio.sleep(HOT_LOAD_SECONDS)
        return name

    read, close = build(load)
    await read()  # warm: the first load is not part of the figure
    loads = 0
    latencies: list[float] = []
    callers: set[asyncio.Task[None]] = set()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        caller = asyncio.create_task(timed_read(read, latencies))
        callers.add(caller)
        caller.add_done_callback(callers.discard)
        await asyncio.sleep(CALLER_INTERVAL)
    await asyncio.gather(*callers)
    await close()
    return sum(latency > WAITED for latency in latencies) / len(latencies), loads


async def hot(seconds: float, rounds: int) -> None:
    header(f"hot key: a caller every ms for {seconds:g} s, ttl {HOT_TTL} s, a 20 ms load")
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in HOT_CONTENDERS}
    for _ in range(rounds):
        for name, build in HOT_CONTENDERS.items():
            samples[name].append(await hot_key(build, seconds))
    print(f"  {'':<42} {'callers waited':>14} {'loads':>6}")
    for name, runs in samples.items():
        fraction = statistics.median(fraction for fraction, _ in runs)
        loads = statistics.median(count for _, count in runs)
        print(f"  {name:<42} {fraction * 100:>13.2f}% {loads:>6.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run, noisy figures")
    arguments = parser.parse_args()
    print(
        f"polycache {polycache.__version__} expiry benchmark "
        f"({'quick' if arguments.quick else 'full'})"
    )
    if arguments.quick:
        asyncio.run(wave(keys=1_000, steps=8, rounds=1))
        asyncio.run(hot(seconds=0.5, rounds=1))
    else:
        asyncio.run(wave(keys=10_000, steps=24, rounds=3))
        asyncio.run(hot(seconds=3.0, rounds=3))


if __name__ == "__main__":
    main()
