"""Invalidation delay across processes: how soon a write in one process reaches the others.

Run: .venv/bin/python -m benchmarks.bench_fleet [--quick]

One writer and several reader processes (`tests.fleet.worker`, each a Cache with a near-cache in
front of one shared backend): first a Momento stand-in, talked to through the real momento SDK
(invalidations over Momento Topics), then a real redis-server (over pub/sub). Each round,
every reader polls a key it holds (a `get` every millisecond) while the writer `set`s a new
value; the delay runs from the end of the writer's `set` to the first `get` in a reader that
returns the new value (so it includes up to 1 ms of polling).

Contenders, per backend: the near-cache with invalidation, and the same near-cache without it
(its copies live `local_ttl`, here 1 s; each write lands at a random moment of a copy's life).
Also the cost of the writer's `set`, with and without announcing the key (publishing runs in the
background, so it costs a lone `set` nothing, and sets back to back share the process with it).
Figures are from one run: percentiles over every reader's rounds, ratios of medians.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

from tests.fleet.processes import FleetProcess
from tests.stand_ins.momento_server import MomentoStandIn
from tests.stand_ins.redis_server import RedisServer

CACHE_NAME = "bench-fleet"
LOCAL_TTL = 1.0
GOAL_MS = 200.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(
    url: str, readers: int, rounds: int, set_calls: int, *, invalidation: bool
) -> dict[str, list[float]]:
    """Delays (ms) from each write to each reader seeing it, and the writer's set times (us)."""
    fleet = [FleetProcess(url, invalidation=invalidation) for _ in range(readers + 1)]
    draw = random.Random(1)
    try:
        writer, *watchers = fleet
        for process in fleet:
            process.ready().call("get", key="warm-up")  # connected to the backend
            if invalidation:
                assert process.call("wait_connected", timeout=10.0)["connected"]
        delays: list[float] = []
        key = f"hot:{'topics' if invalidation else 'ttl'}"
        writer.call("set", key=key, value=0)
        for number in range(1, rounds + 1):
            for watcher in watchers:
                # Each reader holds the current value before the write (a hot key).
                assert watcher.call("wait_for", key=key, value=number - 1, timeout=5.0)["seen"]
            if not invalidation:
                # A write lands at a random moment of a copy's local_ttl, not right after a read.
                time.sleep(draw.uniform(0, LOCAL_TTL))
            for watcher in watchers:
                watcher.send("wait_for", key=key, value=number, timeout=LOCAL_TTL + 5)
            written = writer.call("set", key=key, value=number)
            for watcher in watchers:
                seen = watcher.reply()
                if not seen["seen"]:
                    raise RuntimeError(f"a reader never saw round {number}: {seen}")
                delays.append((float(seen["at"]) - float(written["at"])) * 1e3)
        back_to_back = writer.call("time_sets", key="set:cost", count=set_calls)["took"]
        spaced = writer.call("time_sets", key="set:cost", count=set_calls // 4, pause=0.005)
        return {
            "delays_ms": delays,
            "sets_us": [took * 1e6 for took in back_to_back],
            "spaced_sets_us": [took * 1e6 for took in spaced["took"]],
        }
    finally:
        for process in fleet:
            process.stop()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rounds")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    arguments = parser.parse_args(argv)
    readers, rounds, ttl_rounds, set_calls = (1, 5, 2, 20) if arguments.quick else (3, 100, 15, 400)
    print(
        f"# Fleet benchmark: 1 writer, {readers} readers, {rounds} writes "
        f"({ttl_rounds} without invalidation); one Momento stand-in, then one redis-server"
    )
    runs: dict[str, tuple[dict[str, list[float]], dict[str, list[float]]]] = {}
    with MomentoStandIn() as momento:
        momento.reset(caches=[CACHE_NAME])
        url = momento.url(CACHE_NAME, local_ttl=LOCAL_TTL)
        runs["momento"] = (
            measure(url, readers, rounds, set_calls, invalidation=True),
            measure(url, readers, ttl_rounds, set_calls, invalidation=False),
        )
    redis_server = RedisServer().start()
    try:
        url = f"{redis_server.url}?local_max_entries=1000&local_ttl={LOCAL_TTL:g}"
        runs["redis"] = (
            measure(url, readers, rounds, set_calls, invalidation=True),
            measure(url, readers, ttl_rounds, set_calls, invalidation=False),
        )
    finally:
        redis_server.stop()
    base = "near-cache + Momento Topics"
    base_p50 = statistics.median(runs["momento"][0]["delays_ms"])
    results: dict[str, Any] = {}
    for backend, channel in (("momento", base), ("redis", "near-cache + Redis pub/sub")):
        pushed, ttl_only = runs[backend]
        ttl_name = f"near-cache, local_ttl={LOCAL_TTL:g} s only"
        print(f"\n## invalidation delay across processes ({backend})")
        for name, samples in ((channel, pushed), (ttl_name, ttl_only)):
            delays = samples["delays_ms"]
            p50, p99 = statistics.median(delays), percentile(delays, 0.99)
            key = name if backend == "momento" else f"{name} ({backend})"
            results[key] = {"p50_ms": p50, "p99_ms": p99, "samples": len(delays)}
            print(
                f"  {name:<36} p50 {p50:8.1f} ms   p99 {p99:8.1f} ms   "
                f"{p50 / base_p50:7.1f}x {base} (p50)"
            )
        print(f"  goal: p99 of {channel} under {GOAL_MS:.0f} ms")
    for backend in ("momento", "redis"):
        pushed, ttl_only = runs[backend]
        print(f"\n## the writer's set (publishing in the background, {backend})")
        for pattern, field in (("back to back", "sets_us"), ("5 ms apart", "spaced_sets_us")):
            base_set = statistics.median(ttl_only[field])
            for name, samples in (("announced", pushed), ("not announced", ttl_only)):
                label = f"set, {name}, {pattern}"
                median = statistics.median(samples[field])
                key = label if backend == "momento" else f"{label} ({backend})"
                results[key] = {"median_us": median}
                print(f"  {label:<36} {median:9.1f} us   {median / base_set:6.3f}x not announced")
    if arguments.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    return results


if __name__ == "__main__":
    main()
