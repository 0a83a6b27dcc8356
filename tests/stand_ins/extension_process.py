"""The polycache extension as a real process on 127.0.0.1, for tests and benchmarks.

Started with `python -m polycache.extension` (or any command) on a free port, ready once
`/health` answers, stopped by its PID: SIGTERM, then SIGKILL if it lingers.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import IO, Any

__all__ = ["ExtensionProcess", "free_port"]

HOST = "127.0.0.1"
_TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _base_environment() -> dict[str, str]:
    # Nothing of the developer's (or the test run's) configuration leaks into the process.
    dropped = ("POLYCACHE_", "AWS_", "CACHE_EXTENSION_", "PARAMETERS_SECRETS_", "SSM_", "SECRETS_")
    return {name: value for name, value in os.environ.items() if not name.startswith(dropped)}


class ExtensionProcess:
    """One extension process.

    Args:
        environment: Variables added to a clean copy of this process's environment.
        port: The port to serve on; a free one if None.
        command: What to run; `python -m polycache.extension` if None.
        token: Sent with every request of this class; `AWS_SESSION_TOKEN` of `environment`
            by default.
        file_limit: The process's `RLIMIT_NOFILE` (soft and hard), set in the child before
            it runs; the inherited limit if None.
    """

    def __init__(
        self,
        environment: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        command: Sequence[str] | None = None,
        token: str | None = None,
        file_limit: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.file_limit = file_limit
        extra = dict(environment or {})
        self.token = token if token is not None else extra.get("AWS_SESSION_TOKEN")
        self.environment = {
            **_base_environment(),
            "POLYCACHE_EXTENSION_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
        self.command = list(command or [sys.executable, "-m", "polycache.extension"])
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        assert self._process is not None, "not started"
        return self._process.poll()

    def start(self, *, wait: bool = True, timeout: float = 20.0) -> ExtensionProcess:
        """Start the process; with `wait`, return once `/health` answers."""
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        limit = self.file_limit

        def limit_files() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self._process = subprocess.Popen(
            self.command,
            env=self.environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_files if limit is not None else None,
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until `/health` answers 200; raise if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.returncode is not None:
                raise RuntimeError(
                    f"the extension exited with {self.returncode} before it was ready:\n"
                    f"{self.log()}"
                )
            try:
                if self.health() is not None:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the extension was not ready within {timeout} s:\n{self.log()}")
            time.sleep(0.02)

    async def wait_ready_async(self, limit: float = 20.0) -> None:
        """`wait_ready` without blocking the running event loop."""
        await asyncio.to_thread(self.wait_ready, limit)

    def health(self) -> dict[str, Any] | None:
        """`/health`'s JSON, or None if it did not answer 200."""
        status, body = self.request("GET", "/health", timeout=1.0)
        if status != 200:
            return None
        document: dict[str, Any] = json.loads(body)
        return document

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """One blocking request with the token; returns (status, body)."""
        request = urllib.request.Request(f"{self.url}{path}", data=body, method=method)
        if self.token:
            request.add_header(_TOKEN_HEADER, self.token)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def memory(self) -> dict[str, int]:
        """The process's `VmRSS` and `VmHWM` (peak resident memory) in bytes, from /proc."""
        figures: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    figures[name] = int(value.split()[0]) * 1024
        return figures

    def clear(self) -> None:
        """Forget every key/value entry (`DELETE /v1/kv`)."""
        status, body = self.request("DELETE", "/v1/kv")
        if status != 204:
            raise RuntimeError(f"clearing the extension answered {status}: {body!r}")

    def send_signal(self, number: int) -> None:
        """Send a signal to this process only, by its PID."""
        os.kill(self.pid, number)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; returns its status."""
        assert self._process is not None, "not started"
        return self._process.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status (None if never run)."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout)
        return process.returncode

    def log(self) -> str:
        """What the process wrote to stdout and stderr so far."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def close(self) -> None:
        """Stop the process and drop its log."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ExtensionProcess:
        return self.start() if self._process is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
