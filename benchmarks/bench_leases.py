"""Leases: 8 processes miss one hot key at the same moment, with and without leases.

Run: .venv/bin/python -m benchmarks.bench_leases [--quick]

8 OS processes (`tests.fleet_leases.fleet` workers), each with its own `Cache` on one shared
backend (the Momento-protocol stand-in, the extension process, then a redis-server), get a key
that none of them has (a hot key that expired everywhere at once, with no stale window). The
loader sleeps `LOAD_SECONDS` (a source's latency) and then reads the SSM parameter from moto,
which counts the calls. Each round also times "one load": one process alone missing a key.
Rounds interleave the three, so that a noisy neighbour slows them alike; figures are over every
process of every round.

Goal (the fleet issue): with leases, 1 loader call per round, and the p99 latency of the
processes that did not load at most one load time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import uuid
from typing import Any

from tests.fleet_leases.fleet import WARM_PARAMETER, Fleet, seed_parameters
from tests.stand_ins.extension_process import ExtensionProcess
from tests.stand_ins.momento_server import MomentoStandIn
from tests.stand_ins.moto_server import CountingMotoServer
from tests.stand_ins.redis_server import RedisServer

PROCESSES = 8
LOAD_SECONDS = 0.1
LEASE_WAIT = 2.0
CACHE_NAME = "bench-leases"


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (p99 of 16 samples is the largest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def run_fleet(
    backend: str, url: str, moto: CountingMotoServer, rounds: int
) -> dict[str, dict[str, Any]]:
    names = {
        (mode, number): f"/bench/{uuid.uuid4().hex}"
        for mode in ("solo", "leases", "no leases")
        for number in range(rounds)
    }
    seed_parameters(moto.url, dict.fromkeys(names.values(), "value"))
    samples: dict[str, dict[str, list[float]]] = {
        mode: {"calls": [], "all": [], "others": []} for mode in ("solo", "leases", "no leases")
    }
    with Fleet(
        url,
        moto.environment(),
        size=PROCESSES,
        lease_wait=LEASE_WAIT,
        load_seconds=LOAD_SECONDS,
    ) as fleet:
        for number in range(rounds):
            for mode in ("solo", "leases", "no leases"):
                moto.clear_calls()
                workers = fleet.workers[number % PROCESSES :][:1] if mode == "solo" else None
                answers = fleet.get(names[mode, number], leases=mode == "leases", workers=workers)
                assert all(answer["value"] == "value" for answer in answers), answers
                samples[mode]["calls"].append(moto.count("ssm.GetParameter"))
                samples[mode]["all"] += [answer["seconds"] for answer in answers]
                samples[mode]["others"] += [
                    answer["seconds"] for answer in answers if answer["loads"] == 0
                ]
    one_load = statistics.median(samples["solo"]["all"])
    print(f"\n## {PROCESSES} processes miss one hot key together ({backend}, {rounds} rounds)")
    print(f"  one load (1 process alone, median)      {one_load * 1e3:8.1f} ms")
    print(
        f"  {'':<16} {'loader calls per round':>22} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'p99 / one load':>15} {'p99 waiters ms':>15} {'p99 waiters / one load':>23}"
    )
    figures: dict[str, dict[str, Any]] = {"one_load_ms": {"median": one_load * 1e3}}
    for mode, label in (("leases", "with leases"), ("no leases", "without leases")):
        taken = samples[mode]
        # The waiters: the processes that did not load (with leases, all but the holder).
        waiters = taken["others"]
        p99_waiters = percentile(waiters, 0.99) if waiters else None
        row: dict[str, Any] = {
            "loader_calls_per_round": statistics.median(taken["calls"]),
            "loader_calls_max": max(taken["calls"]),
            "p50_ms": statistics.median(taken["all"]) * 1e3,
            "p99_ms": percentile(taken["all"], 0.99) * 1e3,
            "p99_per_load": percentile(taken["all"], 0.99) / one_load,
            "p99_waiters_ms": None if p99_waiters is None else p99_waiters * 1e3,
            "p99_waiters_per_load": None if p99_waiters is None else p99_waiters / one_load,
            "waiters": len(waiters),
        }
        figures[mode] = row
        waiting = (
            f"{row['p99_waiters_ms']:15.1f} {row['p99_waiters_per_load']:22.2f}x"
            if p99_waiters is not None
            else f"{'-':>15} {'-':>23}"
        )
        print(
            f"  {label:<16} {row['loader_calls_per_round']:>14g} (max {row['loader_calls_max']:>2})"
            f" {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} {row['p99_per_load']:14.2f}x {waiting}"
        )
    leased = figures["leases"]
    ratio = leased["p99_waiters_per_load"]
    print(
        f"  goal: 1 loader call per round: {leased['loader_calls_max'] == 1}; p99 of the others"
        f" <= one load: {ratio is not None and ratio <= 1.0}"
        + ("" if ratio is None else f" ({ratio:.2f}x)")
    )
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few rounds")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON at the end")
    arguments = parser.parse_args(argv)
    rounds = 2 if arguments.quick else 20
    print(
        f"# Leases: {PROCESSES} processes, loader = {LOAD_SECONDS * 1e3:.0f} ms sleep + SSM "
        f"GetParameter on moto, lease_wait = {LEASE_WAIT:g} s"
    )
    results: dict[str, Any] = {}
    moto = CountingMotoServer().start()
    try:
        seed_parameters(moto.url, {WARM_PARAMETER: "warm"})
        with MomentoStandIn() as momento:
            momento.reset(caches=[CACHE_NAME])
            results["momento"] = run_fleet("momento", momento.url(CACHE_NAME), moto, rounds)
        with ExtensionProcess(moto.environment()) as extension:
            url = f"extension://127.0.0.1:{extension.port}"
            results["extension"] = run_fleet("extension", url, moto, rounds)
        redis_server = RedisServer().start()
        try:
            results["redis"] = run_fleet("redis", redis_server.url, moto, rounds)
        finally:
            redis_server.stop()
    finally:
        moto.stop()
    if arguments.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    return results


if __name__ == "__main__":
    main()
