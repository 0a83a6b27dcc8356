"""A SnapStart function's life in one process: INIT, snapshot, restore into another environment.

Run by test_restore.py as `python -m tests.snapstart.restored_function ENDPOINT KEY_ID`, with the
AWS variables pointing at the snapshot's environment (server A, credentials X); ENDPOINT and
KEY_ID are those of the restored environment (server B, credentials Y). Never imported: it
builds its cache and prefetches at import, as a function's module does. It:

1. builds a cache, registers it for SnapStart (`secretsmanager:*` reloads on restore) and
   prefetches a parameter and a secret at INIT through `lambda_handler`, as a function would;
2. runs the before-snapshot hooks as Lambda's runtime does (awslambdaric's
   `lambda_runtime_hooks_runner`: popped from `get_before_snapshot()`, last registered first);
3. changes the environment as a restore elsewhere would: new credentials, the endpoint of
   server B (same names, other values);
4. runs the after-restore hooks as the runtime does (`get_after_restore()`, in order);
5. serves two invocations, and prints what it saw as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.parse
from typing import Any

from snapshot_restore_py import get_after_restore, get_before_snapshot

import polycache
import polycache.snapstart

PARAMETER = "ssm:/app/config"
SECRET = "secretsmanager:app/token"


def run_before_snapshot() -> None:
    hooks = get_before_snapshot()
    while hooks:
        function, args, kwargs = hooks.pop()
        function(*args, **kwargs)


def run_after_restore() -> None:
    for function, args, kwargs in get_after_restore():
        function(*args, **kwargs)


def established_connections(port: int) -> int:
    """TCP connections of this process to 127.0.0.1:`port` that are open (ESTABLISHED)."""
    inodes = set()
    for descriptor in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{descriptor}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    with open("/proc/self/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


cache = polycache.Cache(ttl=300)
polycache.snapstart.register(cache, reload_on_restore=["secretsmanager:*"])


@polycache.lambda_handler(cache=cache, prefetch=[PARAMETER, SECRET])
async def handler(event: str, context: object) -> dict[str, Any]:
    if event == "first":
        started = time.perf_counter()
        parameter = await cache.get(PARAMETER)
        parameter_seconds = time.perf_counter() - started
        counted = cache.stats
        started = time.perf_counter()
        secret = await cache.get(SECRET)
        secret_seconds = time.perf_counter() - started
        return {
            "parameter": parameter,
            "parameter_seconds": parameter_seconds,
            "stale_hits": counted.stale_hits,
            "misses": counted.misses,
            "secret": secret,
            "secret_seconds": secret_seconds,
        }
    # A later invocation: the background refresh started by the first one lands meanwhile.
    deadline = time.monotonic() + 10
    parameter = await cache.get(PARAMETER)
    while parameter == "config-A" and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        parameter = await cache.get(PARAMETER)
    return {"parameter": parameter, "secret": await cache.get(SECRET)}


def main() -> None:
    restored_endpoint, restored_key_id = sys.argv[1:3]
    snapshot_port = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL"]).port
    assert snapshot_port is not None
    report: dict[str, Any] = {
        "init_connections": established_connections(snapshot_port),
        "init_stats": cache.stats.loads,
    }
    run_before_snapshot()
    report["snapshot_connections"] = established_connections(snapshot_port)
    os.environ.update(
        AWS_ACCESS_KEY_ID=restored_key_id,
        AWS_SECRET_ACCESS_KEY="restored-secret",
        AWS_SESSION_TOKEN="restored-token",
        AWS_ENDPOINT_URL=restored_endpoint,
    )
    started = time.perf_counter()
    run_after_restore()
    report["restore_seconds"] = time.perf_counter() - started
    report["first"] = handler("first", None)
    report["later"] = handler("later", None)
    stats = cache.stats
    report["stats"] = {"stale_hits": stats.stale_hits, "loads": stats.loads}
    report["final_connections"] = established_connections(snapshot_port)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
