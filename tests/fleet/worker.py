"""One process of a fleet: a Cache on a shared backend, driven by JSON lines on stdin.

Run by `tests.fleet.processes.FleetProcess` as `python -m tests.fleet.worker --url URL`. Each
command line gets one reply line on stdout. `new_loop` ends the running event loop and goes on
in a new one, as a Lambda handler that calls `asyncio.run()` per invocation does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from polycache import Cache
from polycache._observe import BaseObserver, Observers
from polycache._registry import backend_from_url
from polycache.backends.near import NearCacheBackend

POLL = 0.001


class Recorder(BaseObserver):
    """Remembers the invalidations other processes caused."""

    def __init__(self) -> None:
        self.remote: list[list[str]] = []

    def invalidation(self, keys: Sequence[str], reason: str) -> None:
        if reason == "remote":
            self.remote.append(list(keys))


class Worker:
    def __init__(self, url: str, ttl: float, *, invalidation: bool = True) -> None:
        near = backend_from_url(url)
        assert isinstance(near, NearCacheBackend)
        if not invalidation:
            near = NearCacheBackend(
                near.remote,
                local_max_entries=near.local_max_entries,
                local_ttl=near.local_ttl,
                invalidation=False,
            )
        self.cache = Cache(near, ttl=ttl)
        self.near = near
        self.recorder = Recorder()
        near.observers = Observers([self.recorder])
        self.buffer = b""
        self.loops = 0

    async def session(self) -> bool:
        """Answer commands on this event loop; False once told to exit (or stdin closed)."""
        self.loops += 1
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[bytes | None] = asyncio.Queue()
        descriptor = sys.stdin.fileno()

        def readable() -> None:
            chunk = os.read(descriptor, 65536)
            if not chunk:
                loop.remove_reader(descriptor)
                lines.put_nowait(None)
                return
            self.buffer += chunk
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                lines.put_nowait(line)

        loop.add_reader(descriptor, readable)
        try:
            while (line := await lines.get()) is not None:
                command: dict[str, Any] = json.loads(line)
                reply = await self.run(command)
                sys.stdout.write(json.dumps(reply) + "\n")
                sys.stdout.flush()
                if command["op"] == "new_loop" or command.get("then_new_loop"):
                    # Returning ends asyncio.run at once, as a handler's return does.
                    return True
                if command["op"] == "exit":
                    return False
            return False
        finally:
            loop.remove_reader(descriptor)

    async def run(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        cache = self.cache
        if op == "set":
            started = time.perf_counter()
            await cache.set(command["key"], command["value"], tags=command.get("tags"))
            return {"at": time.time(), "took": time.perf_counter() - started}
        if op == "time_sets":
            took = []
            for number in range(command["count"]):
                started = time.perf_counter()
                await cache.set(command["key"], number)
                took.append(time.perf_counter() - started)
                if command.get("pause"):
                    await asyncio.sleep(command["pause"])
            return {"took": took}
        if op == "delete":
            await cache.delete(command["key"])
            return {"at": time.time()}
        if op == "invalidate_tags":
            await cache.invalidate_tags(*command["tags"])
            return {"at": time.time()}
        if op == "clear":
            await cache.clear()
            return {"at": time.time()}
        if op == "get":
            return {"value": await cache.get(command["key"]), "at": time.time()}
        if op == "wait_for":
            return await self.wait_for(command)
        if op == "wait_connected":
            deadline = time.monotonic() + command["timeout"]
            await self.near.get("fleet:warm-up")  # subscribes on this loop, if not yet
            newer_than = command.get("newer_than", 0)
            while not self.live(newer_than) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(POLL)
            return {"connected": self.live(newer_than)}
        if op == "state":
            channel = self.near.channel
            return {
                "connected": channel is not None and channel.connected,
                "held": len(self.near),
                "session": 0 if channel is None else channel.session,
                "remote_invalidations": self.recorder.remote,
                "loops": self.loops,
                "pid": os.getpid(),
            }
        if op == "new_loop":
            return {"loops": self.loops}
        if op == "exit":
            await cache.aclose()
            return {}
        raise ValueError(f"unknown op {op!r}")

    def live(self, newer_than: int) -> bool:
        """Subscribed, in a session newer than `newer_than`."""
        channel = self.near.channel
        return channel is not None and channel.connected and channel.session > newer_than

    async def wait_for(self, command: dict[str, Any]) -> dict[str, Any]:
        """Poll `get` until the key holds `value` (or misses, with `missing`)."""
        key, deadline = command["key"], time.monotonic() + command["timeout"]
        missing = command.get("missing", False)
        while True:
            value = await self.cache.get(key)
            if (value is None) if missing else (value == command["value"]):
                return {"seen": True, "at": time.time(), "value": value}
            if time.monotonic() > deadline:
                return {"seen": False, "at": time.time(), "value": value}
            await asyncio.sleep(POLL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--ttl", type=float, default=300.0)
    parser.add_argument("--no-invalidation", action="store_true", help="local_ttl only")
    arguments = parser.parse_args()
    worker = Worker(arguments.url, arguments.ttl, invalidation=not arguments.no_invalidation)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    while asyncio.run(worker.session()):
        pass


if __name__ == "__main__":
    main()
