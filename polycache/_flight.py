"""`Flight`: one running operation that many callers wait for, each cancellable on its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Flight"]

T = TypeVar("T")


class Flight(Generic[T]):
    """Shares the outcome of one future among its waiters.

    Each waiter awaits a future of its own, so cancelling a waiter never cancels the shared
    work, and the work never waits for a cancelled waiter. Unlike `asyncio.shield` per waiter,
    the outcome reaches every waiter in one callback: a stampede of a thousand callers costs a
    thousand wake-ups, not three thousand.

    Args:
        future: The shared work (usually a task).
        on_done: Called with this flight once the work is done, before the waiters are woken.
    """

    __slots__ = ("future", "on_done", "superseded", "waiters")

    def __init__(
        self, future: asyncio.Future[T], on_done: Callable[[Flight[T]], None] | None = None
    ) -> None:
        self.future = future
        self.on_done = on_done
        self.waiters: list[asyncio.Future[T]] = []
        # Set when newer data arrived while the work ran: its result must not be stored.
        self.superseded = False
        future.add_done_callback(self._finish)

    def wait(self) -> asyncio.Future[T]:
        """A future with the shared outcome, for one waiter to await (and maybe cancel)."""
        waiter: asyncio.Future[T] = self.future.get_loop().create_future()
        if self.future.done():
            self._settle(waiter)
        else:
            self.waiters.append(waiter)
        return waiter

    def _settle(self, waiter: asyncio.Future[T]) -> None:
        if waiter.done():
            return
        future = self.future
        if future.cancelled():
            waiter.cancel()
            return
        exception = future.exception()
        if exception is not None:
            waiter.set_exception(exception)
        else:
            waiter.set_result(future.result())

    def _finish(self, future: asyncio.Future[T]) -> None:
        if self.on_done is not None:
            self.on_done(self)
        if not future.cancelled():
            # Retrieved here, so that a failure nobody waited for logs no "never retrieved".
            future.exception()
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            self._settle(waiter)
