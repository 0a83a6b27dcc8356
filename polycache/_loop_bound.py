"""`LoopBound`: one resource (a client, a session) per event loop, rebuilt when the loop changes.

Lambda handlers that call `asyncio.run()` per invocation get a new loop each time; a client made
on the old loop would fail on the new one. Every loop-bound resource in polycache goes through
this class, which notices the change and builds the resource anew, and closes each resource on
its own loop when that loop shuts down (`asyncio.run` closes async generators before it returns;
a guard generator per resource rides on that), so no "Unclosed client session" is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, TypeVar

from polycache._flight import Flights

__all__ = ["LoopBound"]

T = TypeVar("T")

logger = logging.getLogger("polycache")


async def _close_at_shutdown(
    close: Callable[[T], Awaitable[None]], value: T
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        try:
            await close(value)
        except Exception as exc:  # closing is best effort: the loop is going away anyway
            logger.debug("polycache: closing a client at loop shutdown failed: %r", exc)


class LoopBound(Generic[T]):
    """Holds one `T` for the running event loop, created on first use.

    Args:
        create: Builds the resource; called once per loop, however many callers ask at once.
        close: Releases a resource; called by `aclose`, or when the resource's loop shuts down.
    """

    __slots__ = ("_close", "_create", "_creating", "_guard", "_loop", "_value")

    def __init__(
        self,
        create: Callable[[], Awaitable[T]],
        close: Callable[[T], Awaitable[None]] | None = None,
    ) -> None:
        self._create = create
        self._close = close
        self._loop: asyncio.AbstractEventLoop | None = None
        self._value: T | None = None
        self._creating: Flights[None, T] = Flights()
        self._guard: AsyncGenerator[None, None] | None = None

    @property
    def current(self) -> T | None:
        """The resource of the running loop, if it has been built (None outside a loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return self._value if loop is self._loop else None

    async def get(self) -> T:
        """Return the resource of the running loop, building it if needed."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            if self._value is not None:
                return self._value
        else:
            # The old resource belongs to another loop; its guard closes it when that loop
            # shuts down, and it cannot be closed from here.
            self._loop = loop
            self._value = None
            self._creating = Flights()
            self._guard = None
        return await self._creating.run(None, self._build)

    async def _build(self) -> T:
        loop = self._loop
        value = await self._create()
        if self._loop is loop:
            self._value = value
            if self._close is not None:
                guard = _close_at_shutdown(self._close, value)
                # The first step registers the generator with the loop, whose shutdown
                # (asyncio.run, loop.shutdown_asyncgens) finishes it and so closes the value.
                await guard.__anext__()
                self._guard = guard
        return value

    async def aclose(self) -> None:
        """Close the resource of the running loop, if any; the next `get` builds a new one."""
        value, loop, guard = self._value, self._loop, self._guard
        self._value, self._loop, self._guard = None, None, None
        self._creating = Flights()
        if value is None or self._close is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is running:
            if guard is not None:
                with contextlib.suppress(RuntimeError):
                    await guard.aclose()  # runs the guard's finally: closes the value
            else:
                await self._close(value)
