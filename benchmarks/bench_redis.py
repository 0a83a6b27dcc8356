"""polycache over Redis against raw redis-py (and valkey-glide), on the same local servers.

Run: .venv/bin/python -m benchmarks.bench_redis [--quick]

Starts a standalone redis-server and a 3-node cluster on 127.0.0.1 (tests/stand_ins). Contenders
are interleaved within each round, so that a noisy neighbour slows them all alike; each figure is
the median (p50) of every single call's latency, and ratios are of those medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from polycache import Cache
from polycache.backends.memory import MemoryBackend
from polycache.backends.near import NearCacheBackend
from polycache.backends.redis import RedisBackend
from tests.stand_ins.redis_server import RedisCluster, RedisServer

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench:key"
VALUE = {"user": 42, "name": "Ada", "roles": ["admin", "dev"], "blob": "x" * 200}
MANY = 100

Operation = Callable[[], Awaitable[Any]]


async def samples_us(operation: Operation, calls: int) -> list[float]:
    times = []
    clock = time.perf_counter
    for _ in range(calls):
        started = clock()
        await operation()
        times.append((clock() - started) * 1e6)
    return times


async def compare(contenders: dict[str, Operation], calls: int, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for operation in contenders.values():
        await samples_us(operation, max(calls // 5, 5))  # warm up connections and caches
    for _ in range(rounds):
        for name, operation in contenders.items():
            samples[name] += await samples_us(operation, calls)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(title: str, medians: dict[str, float], base: str, goal: str = "") -> dict[str, Any]:
    print(f"\n## {title}")
    for name, value in medians.items():
        print(f"  {name:<44} {value:9.1f} us   {value / medians[base]:6.3f}x {base}")
    if goal:
        print(f"  goal: {goal}")
    return {"p50_us": medians, "ratios": {n: v / medians[base] for n, v in medians.items()}}


def glide_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("glide") is not None


async def glide_client(port: int, *, cluster: bool = False) -> Any:
    from glide import (
        GlideClient,
        GlideClientConfiguration,
        GlideClusterClient,
        GlideClusterClientConfiguration,
        NodeAddress,
    )

    if cluster:
        return await GlideClusterClient.create(
            GlideClusterClientConfiguration([NodeAddress("127.0.0.1", port)], request_timeout=1000)
        )
    return await GlideClient.create(
        GlideClientConfiguration([NodeAddress("127.0.0.1", port)], request_timeout=1000)
    )


async def run_standalone(server: RedisServer, calls: int, rounds: int) -> dict[str, Any]:
    from redis.asyncio import Redis

    raw = Redis(host="127.0.0.1", port=server.port, driver_info=None)
    backend = RedisBackend("127.0.0.1", server.port)
    cache = Cache(backend, ttl=300, backend_timeout=5)
    near_cache = Cache(
        NearCacheBackend(RedisBackend("127.0.0.1", server.port), local_ttl=60), ttl=300
    )
    memory_cache = Cache(MemoryBackend(), ttl=300)
    raw_value = json.dumps(VALUE, separators=(",", ":")).encode()
    await raw.set("raw:key", raw_value)
    for cache_ in (cache, near_cache, memory_cache):
        await cache_.set(KEY, VALUE)
    many_keys = [f"many:{index}" for index in range(MANY)]
    await raw.mset({f"raw:{key}": raw_value for key in many_keys})
    for key in many_keys:
        await cache.set(key, VALUE)

    async def raw_get() -> Any:
        return json.loads(await raw.get("raw:key"))

    async def backend_get() -> Any:
        return await backend.get(KEY)

    async def polycache_get() -> Any:
        return await cache.get(KEY)

    raw_names = [f"raw:{key}" for key in many_keys]

    async def raw_mget() -> Any:
        return [json.loads(data) for data in await raw.mget(raw_names)]

    async def backend_get_many() -> Any:
        return await backend.get_many(many_keys)

    async def polycache_get_many() -> Any:
        return await cache.get_many(many_keys)

    async def near_get() -> Any:
        return await near_cache.get(KEY)

    async def memory_get() -> Any:
        return await memory_cache.get(KEY)

    get_contenders: dict[str, Operation] = {
        "raw redis.asyncio GET + json.loads": raw_get,
        "RedisBackend.get (no Cache)": backend_get,
        "polycache Cache.get": polycache_get,
    }
    glide = None
    if glide_installed():
        glide = await glide_client(server.port)

        async def glide_get() -> Any:
            return json.loads(await glide.get("raw:key"))

        get_contenders["valkey-glide GET + json.loads"] = glide_get
    assert await raw_get() == VALUE
    assert await polycache_get() == VALUE
    assert await polycache_get_many() == dict.fromkeys(many_keys, VALUE)
    assert await near_get() == VALUE
    assert await memory_get() == VALUE
    results = {
        "get": report(
            "get of one value: polycache vs raw redis.asyncio GET + json.loads",
            await compare(get_contenders, calls, rounds),
            "raw redis.asyncio GET + json.loads",
            "polycache Cache.get <= 1.05x",
        ),
        "get_many": report(
            f"get_many of {MANY} keys: polycache vs raw MGET + json.loads of each",
            await compare(
                {
                    "raw redis.asyncio MGET + json.loads": raw_mget,
                    "RedisBackend.get_many (no Cache)": backend_get_many,
                    "polycache Cache.get_many": polycache_get_many,
                },
                max(calls // 4, 5),
                rounds,
            ),
            "raw redis.asyncio MGET + json.loads",
            "polycache Cache.get_many <= 1.1x",
        ),
        "near": report(
            "near-cache hit in front of redis vs a memory-backend hit",
            await compare(
                {"polycache memory:// hit": memory_get, "polycache near-cache hit": near_get},
                calls * 5,
                rounds,
            ),
            "polycache memory:// hit",
            "near-cache hit <= 3x",
        ),
    }
    for cache_ in (cache, near_cache):
        await cache_.aclose()
    await raw.aclose()
    if glide is not None:
        await glide.close()
    return results


async def run_cluster(cluster: RedisCluster, calls: int, rounds: int) -> dict[str, Any]:
    from redis.asyncio.cluster import RedisCluster as RawCluster
    from redis.crc import key_slot

    port = cluster.nodes[0].port
    raw = RawCluster(host="127.0.0.1", port=port, driver_info=None)
    await raw.initialize()
    backend = RedisBackend("127.0.0.1", port, cluster=True)
    cache = Cache(backend, ttl=300, backend_timeout=5)
    raw_value = json.dumps(VALUE, separators=(",", ":")).encode()
    many_keys = [f"many:{index}" for index in range(MANY)]
    raw_names = [f"raw:{key}" for key in many_keys]
    for name in raw_names:
        await raw.set(name, raw_value)
    for key in many_keys:
        await cache.set(key, VALUE)
    by_slot: dict[int, list[str]] = {}
    for name in raw_names:
        by_slot.setdefault(key_slot(name.encode()), []).append(name)

    async def raw_per_slot_mgets() -> Any:
        groups = await asyncio.gather(*(raw.mget(names) for names in by_slot.values()))
        return [json.loads(data) for group in groups for data in group]

    async def raw_mget_nonatomic() -> Any:
        return [json.loads(data) for data in await raw.mget_nonatomic(raw_names)]

    async def backend_get_many() -> Any:
        return await backend.get_many(many_keys)

    async def polycache_get_many() -> Any:
        return await cache.get_many(many_keys)

    assert len(await raw_per_slot_mgets()) == MANY
    assert await polycache_get_many() == dict.fromkeys(many_keys, VALUE)
    results = {
        "cluster_get_many": report(
            f"cluster get_many of {MANY} keys ({len(by_slot)} slots, 3 nodes)",
            await compare(
                {
                    "raw per-slot MGETs, concurrently": raw_per_slot_mgets,
                    "raw RedisCluster.mget_nonatomic": raw_mget_nonatomic,
                    "RedisBackend.get_many (no Cache)": backend_get_many,
                    "polycache Cache.get_many": polycache_get_many,
                },
                max(calls // 8, 3),
                rounds,
            ),
            "raw per-slot MGETs, concurrently",
            "polycache Cache.get_many <= 1.2x",
        )
    }
    await cache.aclose()
    await raw.aclose()
    return results


COLD = textwrap.dedent(
    """
    import asyncio, sys, time
    started = time.perf_counter()
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "polycache":
        from polycache import Cache
        cache = Cache(f"redis://127.0.0.1:{port}", fail_open=False, backend_timeout=10)
        async def first():
            began = time.perf_counter()
            await cache.get("k")
            return time.perf_counter() - began
    else:
        from glide import GlideClient, GlideClientConfiguration, NodeAddress
        async def first():
            began = time.perf_counter()
            client = await GlideClient.create(
                GlideClientConfiguration([NodeAddress("127.0.0.1", port)])
            )
            await client.get("k")
            elapsed = time.perf_counter() - began
            await client.close()
            return elapsed
    imported = time.perf_counter()
    first_call = asyncio.run(first())
    print(imported - started, first_call)
    """
)


def import_ms(module: str) -> float:
    """What importing `module` adds to an interpreter that has imported polycache (and asyncio)."""
    code = (
        "import time, polycache; s = time.perf_counter(); "
        f"import {module}; print(time.perf_counter() - s)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return float(result.stdout) * 1000


def cold(kind: str, port: int) -> tuple[float, float]:
    result = subprocess.run(
        [sys.executable, "-c", COLD, kind, str(port)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    setup, first_call = (float(field) * 1000 for field in result.stdout.split())
    return setup, first_call


def cold_start(server: RedisServer, repeats: int) -> dict[str, Any]:
    site_packages = [str(Path(module.__file__).parent) for module in _packages()]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "polycache"), *site_packages],
        check=False,
        capture_output=True,
    )
    modules = ["polycache.backends.redis", "redis.asyncio", "redis.asyncio.cluster"]
    kinds = ["polycache"]
    if glide_installed():
        modules.append("glide")
        kinds.append("glide")
    imports = {
        module: statistics.median(import_ms(module) for _ in range(repeats)) for module in modules
    }
    firsts = {}
    for kind in kinds:
        runs = [cold(kind, server.port) for _ in range(repeats)]
        firsts[kind] = (
            statistics.median(setup for setup, _ in runs),
            statistics.median(first for _, first in runs),
        )
    print("\n## import cost and first call (fresh interpreter, bytecode compiled, medians)")
    for module, value in imports.items():
        print(f"  import {module + ' (after polycache)':<38} {value:8.1f} ms")
    labels = {
        "polycache": ("import polycache + Cache('redis://')", "first Cache.get (connects)"),
        "glide": ("import glide (in a fresh interpreter)", "GlideClient.create + first get"),
    }
    for kind, (setup, first) in firsts.items():
        setup_label, first_label = labels[kind]
        print(f"  {setup_label:<45} {setup:8.1f} ms")
        print(f"  {first_label:<45} {first:8.1f} ms")
    return {"import_ms": imports, "first_call_ms": firsts}


def _packages() -> list[Any]:
    import redis

    packages = [redis]
    if glide_installed():
        import glide

        packages.append(glide)
    return packages


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few calls and rounds")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    arguments = parser.parse_args(argv)
    calls, rounds, repeats = (20, 2, 1) if arguments.quick else (400, 10, 7)
    print(f"# Redis benchmark: {calls} sequential calls x {rounds} rounds, p50 of every call")
    if not glide_installed():
        print("(valkey-glide is not installed: its rows are left out)")
    server = RedisServer().start()
    cluster = RedisCluster()
    try:
        cluster.start()
        results = asyncio.run(run_standalone(server, calls, rounds))
        results.update(asyncio.run(run_cluster(cluster, calls, rounds)))
        results["cold"] = cold_start(server, repeats)
    finally:
        cluster.stop()
        server.stop()
    if arguments.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    return results


if __name__ == "__main__":
    main()
