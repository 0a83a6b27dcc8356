"""A fleet of OS processes, each a Cache on one shared backend, loading from moto on a miss.

Each worker (`python -m tests.fleet_leases.fleet --worker ...`) stands for one Lambda execution
environment: its own interpreter, its own `Cache(backend_url)` (one with `lease_wait`, one with
leases off), and a loader for `fleet:` keys that sleeps `load_seconds` (the source's latency) and
then reads the SSM parameter of that name from moto with polycache's `SsmLoader`. Its client
and backend connections are warmed before it reports ready, so that a command measures the miss
alone.

The parent drives the workers over their stdin and stdout, one JSON line each way:
`{"get": NAME, "leases": true}` answers `{"event": "answer", "value": ..., "seconds": ...,
"loads": ..., "lease_waits": ...}` (the Cache's counters for this get alone); just before its
loader runs, a worker says `{"event": "loading"}`. Workers exit at end of input, so a test run
that dies leaves none behind; one can be SIGKILLed by its PID mid-load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["Fleet", "Worker", "seed_parameters"]

ROOT = Path(__file__).resolve().parents[2]
WARM_PARAMETER = "/fleet/warm"
_STARTUP_SECONDS = 60.0


def seed_parameters(endpoint: str, values: Mapping[str, str]) -> None:
    """Create (or overwrite) SSM parameters on the moto server at `endpoint`."""
    import botocore.session

    from tests.stand_ins.moto_server import AWS_TEST_ENVIRONMENT

    client: Any = botocore.session.get_session().create_client(
        "ssm",
        endpoint_url=endpoint,
        region_name=AWS_TEST_ENVIRONMENT["AWS_REGION"],
        aws_access_key_id=AWS_TEST_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_TEST_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=AWS_TEST_ENVIRONMENT["AWS_SESSION_TOKEN"],
    )
    for name, value in values.items():
        client.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)


class Worker:
    """One worker process: started by `Fleet`, stopped by its PID."""

    def __init__(
        self,
        backend_url: str,
        environment: Mapping[str, str],
        *,
        lease_wait: float,
        load_seconds: float,
    ) -> None:
        command = [
            sys.executable,
            "-m",
            "tests.fleet_leases.fleet",
            "--worker",
            backend_url,
            "--lease-wait",
            repr(lease_wait),
            "--load-seconds",
            repr(load_seconds),
        ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**environment, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid
        self._lines: list[dict[str, Any]] = []
        self._arrived = threading.Condition()
        self._stderr: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.startswith("{"):
                with self._arrived:
                    self._lines.append(json.loads(line))
                    self._arrived.notify_all()
        with self._arrived:
            self._arrived.notify_all()

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr.append(line)
            del self._stderr[:-40]

    def send(self, command: Mapping[str, Any]) -> None:
        """Write one command line to the worker."""
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The worker's next line of kind `event` (earlier lines of other kinds are dropped)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                while self._lines:
                    line = self._lines.pop(0)
                    if line["event"] == event:
                        return line
                    if line["event"] == "error":
                        raise RuntimeError(f"worker {self.pid} failed: {line['error']}")
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    raise RuntimeError(
                        f"worker {self.pid} sent no {event!r} within {timeout} s "
                        f"(exit status {self.process.poll()}):\n{''.join(self._stderr)}"
                    )
                self._arrived.wait(min(remaining, 0.5))

    def kill(self) -> None:
        """SIGKILL this worker, by its PID."""
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """End its input (it exits), then SIGKILL it by PID if it lingers."""
        process = self.process
        if process.poll() is None and process.stdin is not None:
            try:
                process.stdin.close()
                process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if process.poll() is None:
            self.kill()


class Fleet:
    """`size` workers on one backend; `get` makes them all miss one key at the same moment.

    Args:
        backend_url: The shared backend's URL (`momento://...`, `extension://...`, `redis://...`).
        environment: The workers' environment (moto's AWS variables; the extension's token).
        size: How many worker processes.
        lease_wait: Each worker's `Cache(lease_wait=...)` for commands with leases.
        load_seconds: How long each worker's loader sleeps before it reads from moto.
    """

    def __init__(
        self,
        backend_url: str,
        environment: Mapping[str, str],
        *,
        size: int = 8,
        lease_wait: float = 2.0,
        load_seconds: float = 0.3,
    ) -> None:
        self.backend_url = backend_url
        self.environment = dict(environment)
        self.lease_wait = lease_wait
        self.load_seconds = load_seconds
        self.workers: list[Worker] = []
        try:
            self.workers = [self.spawn() for _ in range(size)]
            for worker in self.workers:
                worker.expect("ready", _STARTUP_SECONDS)
        except BaseException:
            self.stop()
            raise

    def spawn(self, *, load_seconds: float | None = None) -> Worker:
        """Start one more worker of this fleet's kind (not waited for, not in `workers`)."""
        return Worker(
            self.backend_url,
            self.environment,
            lease_wait=self.lease_wait,
            load_seconds=self.load_seconds if load_seconds is None else load_seconds,
        )

    def get(
        self,
        name: str,
        *,
        leases: bool = True,
        workers: Sequence[Worker] | None = None,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Make the workers get `fleet:{name}` at once; their answers, in worker order."""
        chosen = self.workers if workers is None else workers
        for worker in chosen:
            worker.send({"get": name, "leases": leases})
        return [worker.expect("answer", timeout) for worker in chosen]

    def stop(self) -> None:
        """Stop every worker."""
        for worker in self.workers:
            worker.stop()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- the worker (runs in each subprocess) ---------------------------------------------------------


def _say(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")
    sys.stdout.flush()


async def _work(backend_url: str, lease_wait: float, load_seconds: float) -> None:
    from polycache import Cache
    from polycache.loaders.ssm import SsmLoader

    ssm = SsmLoader()

    async def load(name: str) -> Any:
        _say("loading", name=name)
        await asyncio.sleep(load_seconds)
        return await ssm(name)

    caches = {
        True: Cache(backend_url, lease_wait=lease_wait),
        False: Cache(backend_url, lease_wait=0),
    }
    for cache in caches.values():
        cache.register_loader("fleet", load)
        await cache.get("warm-up")  # a plain key: connects to the backend
    await ssm(WARM_PARAMETER)  # builds and connects the SSM client
    _say("ready")
    while line := await asyncio.to_thread(sys.stdin.readline):
        command = json.loads(line)
        cache = caches[bool(command["leases"])]
        before = cache.stats
        started = time.perf_counter()
        value = await cache.get(f"fleet:{command['get']}")
        seconds = time.perf_counter() - started
        after = cache.stats
        _say(
            "answer",
            value=value,
            seconds=seconds,
            loads=after.loads - before.loads,
            lease_waits=after.lease_waits - before.lease_waits,
            backend_errors=after.backend_errors - before.backend_errors,
        )
    for cache in caches.values():
        await cache.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", required=True, metavar="BACKEND_URL")
    parser.add_argument("--lease-wait", type=float, required=True)
    parser.add_argument("--load-seconds", type=float, required=True)
    arguments = parser.parse_args()
    try:
        asyncio.run(_work(arguments.worker, arguments.lease_wait, arguments.load_seconds))
    except Exception as exc:
        _say("error", error=f"{type(exc).__name__}: {exc}")
        raise


if __name__ == "__main__":
    main()
