"""A module-level Cache used by `asyncio.run(handler())` again and again, as Lambda handlers do.

Run in a fresh interpreter with every warning an error (ResourceWarning too), counting the process's
open file descriptors: no error, hang, leaked socket or unclosed transport after 50 runs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.stand_ins.redis_server import RedisCluster, RedisServer

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, os, sys, warnings
    warnings.simplefilter("error")
    from polycache import Cache

    cache = Cache(sys.argv[1], fail_open=False, backend_timeout=5)
    width = int(sys.argv[2])  # concurrent gets per run: that many connections

    async def handler(invocation):
        await cache.set(f"k{invocation}", {"n": invocation})
        assert await cache.get(f"k{invocation}") == {"n": invocation}
        many = await cache.get_many([f"k{invocation}", "absent"])
        assert many == {f"k{invocation}": {"n": invocation}, "absent": None}
        await asyncio.gather(*(cache.get(f"k{index}") for index in range(invocation % width + 1)))
        await cache.delete(f"k{invocation}")

    def open_fds():
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    counts = []
    for invocation in range(50):
        asyncio.run(handler(invocation))
        counts.append(open_fds())
    print("fds", counts[4], counts[-1], max(counts))
    """
)


def run_fifty(url: str, width: int = 8) -> list[int]:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT, url, str(width)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "", result.stderr[-3000:]  # no "Exception ignored", no warning
    fields = result.stdout.split()
    assert fields[0] == "fds"
    return [int(field) for field in fields[1:]]


def test_fifty_asyncio_runs_standalone(redis_server: RedisServer) -> None:
    after_five, after_fifty, most = run_fifty(redis_server.url)
    assert after_fifty == after_five and most <= after_five + 1


def test_fifty_asyncio_runs_near_cache_with_invalidation(redis_server: RedisServer) -> None:
    # Each run subscribes to invalidations and publishes its writes; each subscription and
    # its connection end with the run's loop.
    url = redis_server.url + "?local_max_entries=100&local_ttl=5"
    after_five, after_fifty, most = run_fifty(url)
    assert after_fifty == after_five and most <= after_five + 1
    counts = dict(redis_server.client().pubsub_numsub("polycache:invalidations"))
    assert counts[b"polycache:invalidations"] == 0


def test_fifty_asyncio_runs_tls(redis_tls_server: RedisServer) -> None:
    after_five, after_fifty, most = run_fifty(redis_tls_server.url, width=2)
    assert after_fifty == after_five and most <= after_five + 1


def test_fifty_asyncio_runs_cluster(redis_cluster: RedisCluster) -> None:
    after_five, after_fifty, most = run_fifty(redis_cluster.url)
    assert after_fifty == after_five and most <= after_five + 3


def test_first_operation_fits_well_inside_backend_timeout(redis_server: RedisServer) -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys, time
        from polycache import Cache
        started = time.perf_counter()
        cache = Cache(sys.argv[1], fail_open=False)   # imports redis-py (the init phase)
        built = time.perf_counter()
        async def first():
            began = time.perf_counter()
            await cache.get("k")
            return time.perf_counter() - began
        print(built - started, asyncio.run(first()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, redis_server.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    construction, first_operation = (float(field) for field in result.stdout.split())
    # The default backend_timeout is 1 s; the first operation connects and asks once.
    assert first_operation < 0.25, (construction, first_operation)
