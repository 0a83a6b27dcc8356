"""The parent's handle on fleet worker processes (`tests.fleet.worker`), and test helpers."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Long enough that only an invalidation, never local_ttl, can explain a fresh value in time.
LONG_LOCAL_TTL = 30
DELAY_GOAL = 0.2


class FleetProcess:
    """One worker process: a Cache on `url`, driven one JSON command at a time.

    Started at construction; `ready` waits until it answers.

    Args:
        url: The backend URL every process of the fleet shares (with a near-cache).
        ttl: The cache's ttl.
        invalidation: False: the near-cache ignores the backend's push channel.
    """

    def __init__(self, url: str, *, ttl: float = 300.0, invalidation: bool = True) -> None:
        environment = {
            **os.environ,
            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fleet.worker",
                "--url",
                url,
                "--ttl",
                str(ttl),
                *([] if invalidation else ["--no-invalidation"]),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=environment,
            bufsize=0,
        )
        self._buffer = b""
        self._ready = False

    def ready(self) -> FleetProcess:
        """Wait until the worker has built its Cache (start several, then wait for each)."""
        if not self._ready:
            line = self._line(timeout=60)
            if line != b"READY":
                self.stop()
                raise RuntimeError(f"a fleet worker did not start: {line!r}")
            self._ready = True
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, op: str, **arguments: Any) -> None:
        """Send a command without waiting for its reply (`reply` reads it)."""
        self.ready()
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}).encode() + b"\n")

    def reply(self, wait: float = 30.0) -> dict[str, Any]:
        """The next reply, waited for at most `wait` seconds."""
        result: dict[str, Any] = json.loads(self._line(wait))
        return result

    def call(self, op: str, *, wait: float = 30.0, **arguments: Any) -> dict[str, Any]:
        """Send a command and wait for its reply (at most `wait` seconds)."""
        self.send(op, **arguments)
        return self.reply(wait)

    def _line(self, timeout: float) -> bytes:
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdout], [], [], left)[0]:
                raise TimeoutError(f"fleet worker {self.pid} did not answer within {timeout} s")
            chunk = os.read(stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"fleet worker {self.pid} exited ({self.process.poll()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def stop(self) -> None:
        """Ask the worker to exit; terminate (then kill) it, by its PID, if it does not."""
        process = self.process
        if process.poll() is None and self._ready:
            with contextlib.suppress(OSError, TimeoutError, RuntimeError, ValueError):
                self.call("exit", wait=10)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def hear(reader: FleetProcess, key: str) -> None:
    """Wait until `reader` has heard of a write to `key` (so that no late message drops it)."""
    for _ in range(500):
        if [key] in reader.call("state")["remote_invalidations"]:
            return
    raise AssertionError(f"{key!r} was never announced")


def wait_seen(
    writer: FleetProcess, reader: FleetProcess, op: str, key: str, **expect: object
) -> tuple[float, dict[str, object]]:
    """Have `reader` poll `key` while `writer` runs `op`; the delay from write to sight."""
    reader.send("wait_for", key=key, timeout=5.0, **expect)
    written = writer.call(op, key=key, value=expect.get("value"))
    seen = reader.reply()
    return float(seen["at"]) - float(written["at"]), seen


Spawn = Callable[..., FleetProcess]
"""Starts a worker process on a backend (`local_ttl=`, and `ttl=` on Momento)."""
