"""The Lambda Runtime and Extensions APIs on 127.0.0.1.

`CargoLambdaApi` runs `cargo lambda watch --only-lambda-apis` (installed with
`pip install --no-deps cargo-lambda`; it needs `cargo` on PATH). cargo-lambda 1.9.2 never sends
SHUTDOWN, so `FakeExtensionsApi` is a small Extensions API that does: it registers extensions,
hands out the events a test queues, and records init and exit errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from tests.stand_ins.extension_process import HOST, free_port

__all__ = ["CargoLambdaApi", "FakeExtensionsApi", "cargo_lambda_missing"]

_MANIFEST = """[package]
name = "polycache-stand-in"
version = "0.0.0"
edition = "2021"

[[bin]]
name = "polycache-stand-in"
path = "src/main.rs"
"""


def _search_path() -> str:
    # cargo-lambda's wheel puts its binary beside this interpreter, not on PATH.
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def cargo_lambda_missing() -> str | None:
    """Why cargo-lambda cannot run here, or None if it can."""
    path = _search_path()
    if shutil.which("cargo", path=path) is None:
        return "cargo is not on PATH (cargo-lambda runs as `cargo lambda`)"
    if shutil.which("cargo-lambda", path=path) is None:
        return "cargo-lambda is not installed: pip install --no-deps cargo-lambda"
    return None


class CargoLambdaApi:
    """`cargo lambda watch --only-lambda-apis` on a free 127.0.0.1 port, stopped by its PID.

    It wants a Cargo manifest even though it builds nothing: a stub crate in a temporary
    directory serves.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._directory = tempfile.TemporaryDirectory(prefix="polycache-cargo-lambda-")
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def runtime_api(self) -> str:
        """`AWS_LAMBDA_RUNTIME_API` as cargo-lambda gives it (a URL with a `/.rt` path)."""
        return f"http://{HOST}:{self.port}/.rt"

    @property
    def invoke_url(self) -> str:
        """Where to POST an invocation of the (only) function."""
        return f"http://{HOST}:{self.port}/2015-03-31/functions/_/invocations"

    def start(self, timeout: float = 60.0) -> CargoLambdaApi:
        root = Path(self._directory.name)
        (root / "src").mkdir(exist_ok=True)
        (root / "Cargo.toml").write_text(_MANIFEST)
        (root / "src" / "main.rs").write_text("fn main() {}\n")
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self._process = subprocess.Popen(
            ["cargo", "lambda", "watch", "--only-lambda-apis", "-A", HOST, "-P", str(self.port)],
            cwd=root,
            env={**os.environ, "PATH": _search_path(), "CARGO_NET_OFFLINE": "true"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # `cargo` runs `cargo-lambda` as its child and does not pass SIGTERM on: a group of
            # their own lets stop() signal both, by the group's ID (cargo's PID).
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"cargo lambda watch exited early:\n{self.log()}")
            try:
                # Its HTTP root never answers; an accepted connection is the readiness signal.
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"cargo lambda watch was not up within {timeout} s")
            time.sleep(0.05)

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], number: int) -> None:
        # ProcessLookupError: the whole group has exited already.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, number)

    def log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        process = self._process
        if process is not None:
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._directory.cleanup()


class FakeExtensionsApi:
    """An Extensions API in the test's event loop that sends the events a test queues."""

    def __init__(self) -> None:
        self.registrations: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.registered = asyncio.Event()
        self.waiting = asyncio.Event()
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def runtime_api(self) -> str:
        """`AWS_LAMBDA_RUNTIME_API` as real Lambda gives it: `host:port`."""
        return f"{HOST}:{self.port}"

    async def start(self) -> FakeExtensionsApi:
        app = web.Application()
        base = "/2020-01-01/extension"
        app.router.add_post(f"{base}/register", self._register)
        app.router.add_get(f"{base}/event/next", self._next)
        app.router.add_post(f"{base}/init/error", self._error)
        app.router.add_post(f"{base}/exit/error", self._error)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        # A private attribute, but the only way to learn the port the OS picked.
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def invoke(self) -> None:
        """Queue an INVOKE event."""
        self._events.put_nowait(
            {
                "eventType": "INVOKE",
                "deadlineMs": int(time.time() * 1000) + 3000,
                "requestId": str(uuid.uuid4()),
                "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:test",
                "tracing": {"type": "X-Amzn-Trace-Id", "value": ""},
            }
        )

    def shutdown(self, reason: str = "spindown") -> None:
        """Queue a SHUTDOWN event with Lambda's 2 s deadline."""
        self._events.put_nowait(
            {
                "eventType": "SHUTDOWN",
                "shutdownReason": reason,
                "deadlineMs": int(time.time() * 1000) + 2000,
            }
        )

    async def _register(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.registrations.append(
            {"name": request.headers.get("Lambda-Extension-Name"), "events": body.get("events")}
        )
        self.registered.set()
        return web.json_response(
            {"functionName": "test", "functionVersion": "$LATEST", "handler": "index.handler"},
            headers={"Lambda-Extension-Identifier": str(uuid.uuid4())},
        )

    async def _next(self, request: web.Request) -> web.Response:
        self.waiting.set()
        event = await self._events.get()
        self.waiting.clear()
        # No Content-Type, as cargo-lambda answers: the client must not depend on it.
        return web.Response(body=json.dumps(event).encode())

    async def _error(self, request: web.Request) -> web.Response:
        self.errors.append(
            {
                "path": request.path,
                "type": request.headers.get("Lambda-Extension-Function-Error-Type"),
                "body": await request.json(),
            }
        )
        return web.json_response({"status": "OK"}, status=202)
