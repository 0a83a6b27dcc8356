"""polycache over Momento against the raw momento SDK, and a near-cache hit against a round trip.

Run: .venv/bin/python -m benchmarks.bench_momento [--quick]

Also: a process's first operation (fresh interpreters, bytecode compiled first), where polycache
imports the SDK when the Cache is built and the raw client pays it in its first call; and bulk
reads (`get_many`, concurrent requests) against one `get` after another.

Everything talks to the project's Momento-protocol stand-in on 127.0.0.1 (a subprocess), through
the real `momento.CacheClientAsync`. Contenders are interleaved within each round, so that a
noisy neighbour slows them all alike; figures are medians over rounds, ratios are of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from polycache import Cache
from polycache.backends.momento import MomentoBackend, build_configuration
from polycache.backends.near import NearCacheBackend
from tests.stand_ins.momento_server import MomentoStandIn

CACHE_NAME = "bench"
KEY = "bench:key"
VALUE = {"user": 42, "name": "Ada", "roles": ["admin", "dev"], "blob": "x" * 200}
GOAL = 1.05

Operation = Callable[[], Awaitable[Any]]


async def per_call_us(operation: Operation, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await operation()
    return (time.perf_counter() - started) / calls * 1e6


async def compare(contenders: dict[str, Operation], calls: int, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for operation in contenders.values():
        await per_call_us(operation, max(calls // 5, 5))  # warm up connections and caches
    for _ in range(rounds):
        for name, operation in contenders.items():
            samples[name].append(await per_call_us(operation, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def report(title: str, medians: dict[str, float], base: str, goal: str = "") -> dict[str, Any]:
    print(f"\n## {title}")
    for name, value in medians.items():
        print(f"  {name:<36} {value:9.1f} us   {value / medians[base]:6.3f}x {base}")
    if goal:
        print(f"  goal: {goal}")
    return {"medians_us": medians, "ratios": {n: v / medians[base] for n, v in medians.items()}}


async def run(server: MomentoStandIn, calls: int, rounds: int) -> dict[str, Any]:
    from momento import CacheClientAsync, CredentialProvider
    from momento.responses import CacheGet

    # The same configuration for both sides, so that only polycache's own work differs.
    configuration = build_configuration(1.1, lambda_tuned=False)
    provider = CredentialProvider.for_momento_local("127.0.0.1", server.port)
    raw = CacheClientAsync(configuration, provider, timedelta(seconds=300))
    backend = MomentoBackend(CACHE_NAME, endpoint=("127.0.0.1", server.port), environ={})
    cache = Cache(backend, ttl=300, backend_timeout=5)
    near_cache = Cache(
        NearCacheBackend(
            MomentoBackend(CACHE_NAME, endpoint=("127.0.0.1", server.port), environ={}),
            local_max_entries=1000,
            local_ttl=60,
        ),
        ttl=300,
        backend_timeout=5,
    )
    # The raw client stores what an application would: its value as JSON bytes.
    raw_value = json.dumps(VALUE, separators=(",", ":")).encode()
    await raw.set(CACHE_NAME, "raw:key", raw_value)
    await cache.set(KEY, VALUE)
    await near_cache.set(KEY, VALUE)

    async def raw_get() -> Any:
        response = await raw.get(CACHE_NAME, "raw:key")
        if isinstance(response, CacheGet.Hit):
            return json.loads(response.value_bytes)
        raise LookupError(f"the benchmark key was not read back: {response}")

    async def raw_set() -> None:
        await raw.set(CACHE_NAME, "raw:key", json.dumps(VALUE, separators=(",", ":")).encode())

    async def polycache_get() -> Any:
        return await cache.get(KEY)

    async def polycache_set() -> None:
        await cache.set(KEY, VALUE)

    async def backend_get() -> Any:
        return await backend.get(KEY)

    entry = await backend.get(KEY)
    assert entry is not None

    async def backend_set() -> None:
        await backend.set(KEY, entry)

    async def near_get() -> Any:
        return await near_cache.get(KEY)

    assert await raw_get() == VALUE
    assert await polycache_get() == VALUE
    assert await near_get() == VALUE
    results = {
        "get": report(
            "get: polycache over Momento vs the raw CacheClientAsync (+ json.loads)",
            await compare(
                {
                    "raw CacheClientAsync.get": raw_get,
                    "MomentoBackend.get (no Cache)": backend_get,
                    "polycache Cache.get": polycache_get,
                },
                calls,
                rounds,
            ),
            "raw CacheClientAsync.get",
            f"<= {GOAL}x",
        ),
        "set": report(
            "set: polycache over Momento vs the raw CacheClientAsync (+ json.dumps)",
            await compare(
                {
                    "raw CacheClientAsync.set": raw_set,
                    "MomentoBackend.set (no Cache)": backend_set,
                    "polycache Cache.set": polycache_set,
                },
                calls,
                rounds,
            ),
            "raw CacheClientAsync.set",
            f"<= {GOAL}x",
        ),
        "near": report(
            "near-cache hit vs a Momento round trip",
            await compare(
                {
                    "polycache get, Momento round trip": polycache_get,
                    "polycache get, near hit": near_get,
                },
                calls,
                rounds,
            ),
            "polycache get, Momento round trip",
        ),
    }
    await cache.aclose()
    await near_cache.aclose()
    await raw.__aexit__(None, None, None)
    return results


async def bulk(server: MomentoStandIn, rounds: int) -> dict[str, Any]:
    backend = MomentoBackend(CACHE_NAME, endpoint=("127.0.0.1", server.port), environ={})
    keys = [f"bulk:{index}" for index in range(50)]
    entry = await backend.get(KEY)
    assert entry is not None
    await backend.set_many(dict.fromkeys(keys, entry))

    async def one_by_one() -> Any:
        return [await backend.get(key) for key in keys]

    async def get_many() -> Any:
        return await backend.get_many(keys)

    assert [read is not None for read in await get_many()] == [True] * len(keys)
    result = report(
        f"bulk read of {len(keys)} keys: get_many (concurrent) vs one get after another",
        await compare({"50 x MomentoBackend.get": one_by_one, "get_many": get_many}, 1, rounds),
        "50 x MomentoBackend.get",
    )
    await backend.aclose()
    return result


# Runs in a fresh interpreter: what a cold Lambda execution environment does first.
_COLD_POLYCACHE = """
import asyncio, json, sys, time
started = time.perf_counter()
from polycache import Cache
cache = Cache(sys.argv[1])  # module scope: no event loop yet
built = time.perf_counter() - started

async def first():
    started = time.perf_counter()
    value = await cache.get("bench:key")
    return value, time.perf_counter() - started

value, first = asyncio.run(first())
assert value is not None and cache.stats.backend_errors == 0
print(json.dumps({"built": built, "first": first}))
"""
_COLD_RAW = """
import asyncio, json, sys, time
from datetime import timedelta

async def first():
    started = time.perf_counter()
    from momento import CacheClientAsync, Configurations, CredentialProvider
    provider = CredentialProvider.for_momento_local("127.0.0.1", int(sys.argv[1]))
    client = CacheClientAsync(Configurations.Laptop.latest(), provider, timedelta(seconds=60))
    response = await client.get("bench", "raw:key")
    return response, time.perf_counter() - started

response, first = asyncio.run(first())
print(json.dumps({"built": 0.0, "first": first}))
"""


def cold_starts(server: MomentoStandIn, processes: int) -> dict[str, Any]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = {**os.environ, "PYTHONPATH": root}
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "polycache", "benchmarks"],
        cwd=root,
        check=True,
    )
    samples: dict[str, list[dict[str, float]]] = {"raw": [], "polycache": []}
    for _ in range(processes):
        for name, code, argument in (
            ("raw", _COLD_RAW, str(server.port)),
            ("polycache", _COLD_POLYCACHE, server.url(CACHE_NAME)),
        ):
            output = subprocess.run(
                [sys.executable, "-c", code, argument],
                cwd=root,
                env=environment,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
            samples[name].append(json.loads(output.strip().splitlines()[-1]))
    medians = {
        "raw CacheClientAsync: import + first get": statistics.median(
            sample["first"] for sample in samples["raw"]
        )
        * 1e6,
        "polycache: Cache(...) at module scope": statistics.median(
            sample["built"] for sample in samples["polycache"]
        )
        * 1e6,
        "polycache: first get (in backend_timeout)": statistics.median(
            sample["first"] for sample in samples["polycache"]
        )
        * 1e6,
    }
    return report(
        f"a process's first operation ({processes} fresh processes, medians)",
        medians,
        "raw CacheClientAsync: import + first get",
        "the first get, which backend_timeout (1 s) bounds, pays no import",
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few calls and rounds")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    arguments = parser.parse_args(argv)
    calls, rounds = (20, 3) if arguments.quick else (400, 15)
    print(f"# Momento benchmark: {calls} sequential calls x {rounds} rounds, medians")
    with MomentoStandIn() as server:
        server.reset(caches=[CACHE_NAME])
        results = asyncio.run(run(server, calls, rounds))
        results["bulk"] = asyncio.run(bulk(server, rounds))
        results["server_calls"] = dict(server.calls())
        results["cold"] = cold_starts(server, 2 if arguments.quick else 7)
    if arguments.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    return results


if __name__ == "__main__":
    main()
