"""Every backend survives the pattern most Lambda code uses: `asyncio.run(handler())` per call.

A module-level Cache outlives each invocation's event loop. Fifty invocations in a row must give
no error, no hang, no leaked file descriptor and no `ResourceWarning`.
"""

from __future__ import annotations

import asyncio
import gc
import os
import warnings

from polycache import Backend, Cache

INVOCATIONS = 50


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_module_level_cache_survives_asyncio_run_per_invocation(backend: Backend) -> None:
    # A short ttl and a long stale window: many invocations serve stale and start a refresh
    # that the end of their loop cuts short.
    cache = Cache(backend, ttl=0.01, stale_ttl=60, backend_timeout=2)
    loads = 0

    async def load() -> dict[str, int]:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.001)
        return {"loads": loads}

    async def handler(invocation: int) -> None:
        value = await cache.get_or_load("loop-change", load)
        assert value["loads"] >= 1
        key = f"loop-change-{invocation % 3}"
        await cache.set(key, invocation)
        assert await cache.get(key) == invocation
        many = await cache.get_many([key, "loop-change-absent"])
        assert many == {key: invocation, "loop-change-absent": None}
        await cache.delete(key)
        assert await cache.get(key) is None

    baseline = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for invocation in range(INVOCATIONS):
            asyncio.run(asyncio.wait_for(handler(invocation), timeout=10))
            if invocation == 4:
                gc.collect()
                baseline = _open_fds()
        gc.collect()
        leaked = _open_fds() - baseline
    assert leaked <= 2, f"{leaked} file descriptors more after {INVOCATIONS - 5} invocations"
    resource_warnings = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not resource_warnings, [str(w.message) for w in resource_warnings]
    assert cache.stats.backend_errors == 0
    assert 1 <= loads <= INVOCATIONS
