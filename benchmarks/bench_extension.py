"""The extension:// backend against raw HTTP to the same extension, and against AWS itself.

Run: .venv/bin/python -m benchmarks.bench_extension [--quick] [--json]

One extension process and one moto server on 127.0.0.1 (subprocess and thread). Each contender
reads one 100-byte value, one call at a time as a Lambda handler would:

- `extension:// get`: `ExtensionBackend.get`, the backend the `Cache` uses;
- `Cache(extension://).get`: the same through a `Cache` (deserialization included);
- `httpx keep-alive`: a raw `httpx.AsyncClient` GET of the same key on kept-alive connections,
  the floor for any client in Python (goal: `extension://` <= 1.1x this);
- `httpx new connection`: a new client per request, what naive code does;
- `aioboto3 -> moto`: a direct GetParameter, what the extension saves on a hit.

A second table times `asyncio.run(handler())` per invocation, each doing one get through a
module-level backend, the pattern most Lambda code uses (a new event loop each time, so the
backend's connections are made anew): `extension://` beside an empty `asyncio.run` and beside
a new `httpx.AsyncClient` per loop with its defaults (what the backend did before: it built a
verifying TLS context per loop). Goal: <= 2 ms per invocation.

Contenders are interleaved in many short rounds, each starting with the next contender, so that
a noisy neighbour slows them all alike.
p50 and p99 are over every call of a contender; requests/s is the median over rounds; ratios
are of medians, to `httpx keep-alive`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import httpx

from polycache import Cache
from polycache.backends.extension import ExtensionBackend
from tests.stand_ins.extension_process import ExtensionProcess
from tests.stand_ins.moto_server import CountingMotoServer

KEY = "bench:key"
VALUE = b"x" * 100
PARAMETER = "/bench/parameter"
BASE = "httpx keep-alive"
GOAL = 1.1
PER_INVOCATION_GOAL_MS = 2.0

Operation = Callable[[], Awaitable[Any]]


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def timed(operation: Operation, calls: int, into: list[float]) -> float:
    """Run `calls` calls, appending each one's microseconds to `into`; returns calls per second."""
    clock = time.perf_counter
    started = clock()
    for _ in range(calls):
        before = clock()
        await operation()
        into.append((clock() - before) * 1e6)
    return calls / (clock() - started)


async def compare(
    contenders: dict[str, tuple[Operation, int]], rounds: int
) -> dict[str, dict[str, float]]:
    latencies: dict[str, list[float]] = {name: [] for name in contenders}
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for operation, calls in contenders.values():
        await timed(operation, max(calls // 5, 3), [])  # warm up connections and clients
    names = list(contenders)
    for round_number in range(rounds):
        # Each round starts with the next contender, so none always follows the same one (the
        # moto thread and the garbage of a new connection per request weigh on what follows).
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            operation, calls = contenders[name]
            gc.collect()
            rates[name].append(await timed(operation, calls, latencies[name]))
    return {
        name: {
            "p50_us": statistics.median(latencies[name]),
            "p99_us": percentile(latencies[name], 0.99),
            "requests_per_s": statistics.median(rates[name]),
        }
        for name in contenders
    }


def report(results: dict[str, dict[str, float]]) -> dict[str, Any]:
    base = results[BASE]["p50_us"]
    print("\n## get of one 100-byte value, one call at a time")
    print(f"  {'contender':<28} {'p50 us':>9} {'p99 us':>9} {'req/s':>9}   p50 ratio")
    for name, figures in results.items():
        print(
            f"  {name:<28} {figures['p50_us']:9.1f} {figures['p99_us']:9.1f} "
            f"{figures['requests_per_s']:9.0f}   {figures['p50_us'] / base:6.2f}x {BASE}"
        )
    ratios = {name: figures["p50_us"] / base for name, figures in results.items()}
    print(
        f"  goal: extension:// get <= {GOAL}x {BASE} (measured {ratios['extension:// get']:.2f}x)"
    )
    return {"results": results, "ratios": ratios}


async def run(extension: ExtensionProcess, moto: CountingMotoServer, quick: bool) -> dict[str, Any]:
    import aioboto3

    # Many short rounds: a neighbour's burst of load then falls on every contender alike.
    calls, aws_calls, rounds = (40, 10, 2) if quick else (100, 10, 60)
    token = extension.token or ""
    backend = ExtensionBackend(port=extension.port, token=token)
    cache = Cache(backend)
    await cache.set(KEY, VALUE)
    path = "/v1/kv/" + urllib.parse.quote(KEY, safe="")
    headers = {"X-Aws-Parameters-Secrets-Token": token}
    raw = httpx.AsyncClient(base_url=extension.url, headers=headers, trust_env=False)

    async def backend_get() -> Any:
        return await backend.get(KEY)

    async def cache_get() -> Any:
        return await cache.get(KEY)

    async def raw_get() -> bytes:
        response = await raw.get(path)
        return response.content

    async def new_connection_get() -> bytes:
        async with httpx.AsyncClient(
            base_url=extension.url, headers=headers, trust_env=False
        ) as client:
            response = await client.get(path)
            return response.content

    environment = moto.environment()
    session = aioboto3.Session(
        aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
        region_name=environment["AWS_REGION"],
    )
    async with session.client("ssm", endpoint_url=moto.url, region_name="us-east-1") as ssm:
        await ssm.put_parameter(Name=PARAMETER, Value="x" * 100, Type="String", Overwrite=True)

        async def aws_get() -> Any:
            return await ssm.get_parameter(Name=PARAMETER)

        results = await compare(
            {
                "extension:// get": (backend_get, calls),
                "Cache(extension://).get": (cache_get, calls),
                BASE: (raw_get, calls),
                "httpx new connection": (new_connection_get, max(calls // 10, 10)),
                "aioboto3 -> moto": (aws_get, aws_calls),
            },
            rounds,
        )
    await raw.aclose()
    await cache.aclose()
    return report(results)


def per_invocation(extension: ExtensionProcess, quick: bool) -> dict[str, Any]:
    """Milliseconds of `asyncio.run(handler())`, one get each, for each way of getting."""
    token = extension.token or ""
    backend = ExtensionBackend(port=extension.port, token=token)
    path = "/v1/kv/" + urllib.parse.quote(KEY, safe="")
    headers = {"X-Aws-Parameters-Secrets-Token": token}

    async def with_backend() -> Any:
        return await backend.get(KEY)

    async def with_new_httpx_client() -> Any:
        async with httpx.AsyncClient(
            base_url=extension.url, headers=headers, trust_env=False
        ) as client:
            return (await client.get(path)).content

    async def nothing() -> None:
        return None

    contenders: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
        "extension:// get": with_backend,
        "asyncio.run alone": nothing,
        "httpx client per loop": with_new_httpx_client,
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    rounds, calls = (2, 10) if quick else (20, 25)
    for handler in contenders.values():
        asyncio.run(handler())
    names = list(contenders)
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            handler = contenders[name]
            gc.collect()
            for _ in range(calls):
                started = time.perf_counter()
                asyncio.run(handler())
                samples[name].append((time.perf_counter() - started) * 1000)
    results = {
        name: {"p50_ms": statistics.median(values), "p99_ms": percentile(values, 0.99)}
        for name, values in samples.items()
    }
    print("\n## asyncio.run per invocation, one get each (a new event loop every time)")
    print(f"  {'contender':<28} {'p50 ms':>9} {'p99 ms':>9}")
    for name, figures in results.items():
        print(f"  {name:<28} {figures['p50_ms']:9.2f} {figures['p99_ms']:9.2f}")
    print(
        f"  goal: extension:// get <= {PER_INVOCATION_GOAL_MS} ms per invocation "
        f"(measured {results['extension:// get']['p50_ms']:.2f} ms)"
    )
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few calls and rounds")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    arguments = parser.parse_args(argv)
    moto = CountingMotoServer().start()
    try:
        with ExtensionProcess(moto.environment()) as extension:
            figures = asyncio.run(run(extension, moto, arguments.quick))
            figures["per_invocation"] = per_invocation(extension, arguments.quick)
    finally:
        moto.stop()
    if arguments.json:
        print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
