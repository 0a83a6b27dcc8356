"""The extension's HTTP connections, held to account: deadlines, a cap, quiet errors.

aiohttp's own connection handling is made for a server on a network, not for a process that
shares a Lambda sandbox's few file descriptors and megabytes. Here each connection:

- must complete a request head within `idle_timeout` of opening, or of its last answer (the
  same clock is the keep-alive idle timeout), or it is closed;
- counts against `max_connections`, kept under the file-descriptor limit so that accepting
  never fails for lack of one; at the cap new connections wait in the backlog, and the oldest
  connection not being served is closed to make room once it has had a quarter second;
- answers a malformed request with a generic 400 and logs no part of it: aiohttp's answer and
  log line quote the offending header line, which may be the session token.

Anything logged here is rate-limited, so no flood of clients can flood the function's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.web_request import BaseRequest

__all__ = ["Connection", "Connections", "Listener", "RateLimitedLog", "connection_cap", "serve"]

logger = logging.getLogger("polycache.extension")

# File descriptors left for everything but client connections: the listening socket, logging,
# the AWS clients' connection pools, whatever a runtime extension needs.
_RESERVED_DESCRIPTORS: Final = 64
_LOG_INTERVAL: Final = 10.0
_READ_BUFFER: Final = 16 * 1024
_CODES: Final = {400: "bad_request", 408: "timeout", 413: "too_large", 431: "too_large"}


class RateLimitedLog:
    """Logs one warning per kind per `interval` seconds, counting the ones it held back.

    Args:
        interval: Seconds between two lines of the same kind.
        clock: Monotonic seconds; injectable for tests.
    """

    __slots__ = ("_clock", "_interval", "_last", "_suppressed")

    def __init__(
        self, interval: float = _LOG_INTERVAL, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        """Log `message % args` unless a `kind` line was logged less than `interval` ago."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        held_back = self._suppressed.pop(kind, 0)
        suffix = f" ({held_back} more since the last such line)" if held_back else ""
        logger.warning("polycache-extension: " + message + suffix, *args)


class Connections:
    """The open connections in the order they came, at most `cap` of them.

    At the cap no connection is accepted (new ones wait in the listen backlog) until one
    closes, or until the oldest connection that is not being served has been open for
    `grace` seconds: that one is closed to make room. A burst of callers is served in turn;
    clients that hold connections without finishing a request are pushed out.

    Args:
        cap: Connections open at once at most.
        log: Where shedding is reported.
        grace: Seconds a connection may hold its place before it can be pushed out.
    """

    __slots__ = ("_changed", "_grace", "_log", "_open", "cap")

    def __init__(self, cap: int, log: RateLimitedLog, *, grace: float = 0.25) -> None:
        self.cap = cap
        self._log = log
        self._grace = grace
        self._open: dict[Connection, float] = {}
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, connection: Connection) -> None:
        """Count `connection`."""
        self._open[connection] = time.monotonic()

    def closed(self, connection: Connection) -> None:
        """Forget `connection`."""
        if self._open.pop(connection, None) is not None:
            self._changed.set()

    async def room(self) -> None:
        """Return once a connection may be accepted, pushing out an old idle one if need be."""
        while len(self._open) >= self.cap:
            now = time.monotonic()
            wait = self._grace
            for connection, since in self._open.items():
                if connection.busy:
                    continue
                if now - since >= self._grace:
                    self._log.warning(
                        "shed", "%d connections open: closed the oldest idle one", self.cap
                    )
                    self.closed(connection)
                    connection.force_close()
                    wait = 0.0
                else:
                    wait = self._grace - (now - since)
                break
            if wait <= 0:
                continue
            self._changed.clear()
            try:
                async with asyncio.timeout(max(wait, 0.01)):
                    await self._changed.wait()
            except TimeoutError:
                pass


class Connection(web.RequestHandler):
    """aiohttp's request handler for one connection, counted and with quiet errors.

    Args:
        manager: The runner's `web.Server`.
        connections: Where this connection is counted.
        log: Where errors are reported, rate-limited and without request data.
        **options: `web.RequestHandler`'s own (`keepalive_timeout`, ...).
    """

    __slots__ = ("_connections", "_log", "busy")

    def __init__(
        self,
        manager: web.Server,
        connections: Connections,
        log: RateLimitedLog,
        **options: Any,
    ) -> None:
        super().__init__(manager, **options)
        self._connections = connections
        self._log = log
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection (aiohttp starts its idle clock here)."""
        super().connection_made(transport)
        self._connections.opened(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop counting the connection."""
        self._connections.closed(self)
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer a request aiohttp could not parse or serve, quoting none of it."""
        # aiohttp's `message` and the exception's text quote the offending request line or
        # header line, which may hold the session token: neither is used.
        self._log.warning(
            f"error-{status}",
            "answered %d to a request (%s)",
            status,
            type(exc).__name__ if exc is not None else "no detail",
        )
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had begun; the connection is dropped")
        if status >= 500:
            response = web.json_response(
                {"error": "error", "message": "the extension failed to answer"}, status=status
            )
        else:
            response = web.json_response(
                {"error": _CODES.get(status, "bad_request"), "message": "malformed request"},
                status=status,
            )
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """Report an error while serving, by its type only (its text may quote the request)."""
        exc_info = kwargs.get("exc_info")
        kind = type(exc_info).__name__ if isinstance(exc_info, BaseException) else "error"
        self._log.warning(f"exception-{kind}", "error while serving a request (%s)", kind)


def connection_cap(wanted: int) -> int:
    """`wanted`, lowered to leave file descriptors for the rest of the process."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return wanted
    room = soft - max(_RESERVED_DESCRIPTORS, soft // 4)
    return max(1, min(wanted, room))


def _loop_errors(
    log: RateLimitedLog,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exception = context.get("exception")
        kind = type(exception).__name__ if exception is not None else "no exception"
        # The context's objects (transports, protocols, futures) are not logged: their reprs
        # are long, and a protocol's could hold request data.
        log.warning(f"loop-{kind}", "%s (%s)", context.get("message", "event loop error"), kind)

    return handle


class Listener:
    """Accepts connections on 127.0.0.1 while `Connections` has room; see `serve`."""

    __slots__ = ("_accepting", "_previous_handler", "_socket", "connections")

    def __init__(
        self,
        sock: socket.socket,
        task: asyncio.Task[None],
        connections: Connections,
        previous_handler: Any,
    ) -> None:
        self._socket = sock
        self._accepting = task
        self._previous_handler = previous_handler
        self.connections = connections

    @property
    def port(self) -> int:
        """The port served on."""
        port: int = self._socket.getsockname()[1]
        return port

    async def aclose(self) -> None:
        """Stop accepting; open connections are left to the runner's cleanup."""
        self._accepting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting
        self._socket.close()
        asyncio.get_running_loop().set_exception_handler(self._previous_handler)


async def _accept(
    sock: socket.socket,
    connections: Connections,
    log: RateLimitedLog,
    factory: Callable[[], Connection],
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await connections.room()
        try:
            client, _ = await loop.sock_accept(sock)
        except OSError as exc:
            # Out of descriptors or memory for a moment: wait instead of spinning and logging.
            log.warning(f"accept-{type(exc).__name__}", "cannot accept: %s", type(exc).__name__)
            await asyncio.sleep(0.1)
            continue
        try:
            await loop.connect_accepted_socket(factory, client)
        except OSError as exc:
            client.close()
            log.warning(f"accept-{type(exc).__name__}", "cannot serve: %s", type(exc).__name__)


async def serve(
    runner: web.AppRunner,
    host: str,
    port: int,
    *,
    max_connections: int,
    idle_timeout: float,
    backlog: int = 1024,
) -> Listener:
    """Serve `runner`'s application on `host:port` with the limits above.

    Returns:
        The listener: close it, then clean the runner up.

    Raises:
        OSError: The address cannot be bound.
    """
    loop = asyncio.get_running_loop()
    log = RateLimitedLog()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(_loop_errors(log))
    connections = Connections(connection_cap(max_connections), log)
    manager = runner.server
    assert manager is not None, "the runner is set up first"
    options: dict[str, Any] = {
        "loop": loop,
        "keepalive_timeout": idle_timeout,
        # An answered request's unread body is not waited for: the connection is closed.
        "lingering_time": 0.0,
        # What aiohttp buffers of a body per connection before reading pauses (twice this):
        # 16 KiB instead of 64 keeps many connections' buffers to a few megabytes.
        "read_bufsize": _READ_BUFFER,
        "access_log": None,
        "logger": logger,
    }
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    task = asyncio.create_task(
        _accept(sock, connections, log, lambda: Connection(manager, connections, log, **options))
    )
    return Listener(sock, task, connections, previous_handler)
