"""The one "wait for the one already running" primitive: `Flight` and its keyed table `Flights`.

Every place in polycache where callers share work already under way goes through here: the
Cache's loads and batches, its shared remote reads, `LoopBound`'s per-loop client, a loader's
once-per-table lookups and a backend's once-per-process secret read. The rules are the same
everywhere:

- every waiter awaits a future of its own, so cancelling one waiter never cancels the shared
  work, and the work never waits for a cancelled waiter;
- a failure reaches every waiter that joined, and is not remembered: the next caller starts
  afresh;
- work done in a caller's own task (`Flights.run`) that is cancelled is done again by one of its
  waiters, never handed to them as their own cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["Flight", "Flights"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class _Abandoned(Exception):  # noqa: N818 - internal signal, never escapes this module
    """Handed to the waiters of work whose own caller was cancelled: do it again."""


class Flight(Generic[T]):
    """Shares the outcome of one future among its waiters.

    The outcome reaches every waiter in one callback: a stampede of a thousand callers costs a
    thousand wake-ups, not three thousand as `asyncio.shield` per waiter would.

    Args:
        future: Settled with the shared outcome, by the work itself (`publish`, `fail`) or by
            whoever owns it.

    Attributes:
        superseded: Set when newer data arrived while the work ran: its result must not be
            stored, and nobody new should join it.
    """

    __slots__ = ("_future", "superseded", "waiters")

    def __init__(self, future: asyncio.Future[T] | None = None) -> None:
        # Without a future given, one is made when the first waiter comes: work that nobody
        # joins (most reads) pays for no future and no callback.
        self._future: asyncio.Future[T] | None = None
        self.waiters: list[asyncio.Future[T]] = []
        self.superseded = False
        if future is not None:
            self._adopt(future)

    def _adopt(self, future: asyncio.Future[T]) -> None:
        self._future = future
        future.add_done_callback(self._finish)

    @property
    def future(self) -> asyncio.Future[T]:
        """The shared outcome."""
        future = self._future
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._adopt(future)
        return future

    def wait(self) -> asyncio.Future[T]:
        """A future with the shared outcome, for one waiter to await (and maybe cancel)."""
        future = self.future
        waiter: asyncio.Future[T] = future.get_loop().create_future()
        if future.done():
            self._settle(waiter)
        else:
            self.waiters.append(waiter)
        return waiter

    def publish(self, result: T) -> None:
        """Hand `result` to every waiter now; the work may go on (storing it, say)."""
        future = self._future
        if future is not None and not future.done():
            future.set_result(result)

    def published(self) -> T | None:
        """The result handed to the waiters, if the work has succeeded already; else None."""
        future = self._future
        if (
            future is not None
            and future.done()
            and not future.cancelled()
            and future.exception() is None
        ):
            return future.result()
        return None

    def fail(self, exception: BaseException) -> None:
        """Hand `exception` to every waiter now."""
        future = self._future
        if future is not None and not future.done():
            future.set_exception(exception)

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
        if not future.cancelled():
            # Retrieved here, so that a failure nobody waited for logs no "never retrieved".
            future.exception()
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            self._settle(waiter)


class Flights(dict[K, Flight[T]]):
    """At most one `Flight` per key, on one event loop.

    A dict, so that a hot path can look a key up at C speed (`flights.get(key)`, `key in
    flights`); entries are added and removed only through the methods below.
    """

    __slots__ = ()

    def open(self, key: K) -> Flight[T]:
        """Register a new flight for `key`, settled by its owner, who must `close` it.

        A flight it replaces is marked superseded: the newer work's result wins.
        """
        return self._register(key, Flight(asyncio.get_running_loop().create_future()))

    def _register(self, key: K, flight: Flight[T]) -> Flight[T]:
        replaced = self.get(key)
        if replaced is not None:
            replaced.superseded = True
        self[key] = flight
        return flight

    def close(self, key: K, flight: Flight[T]) -> None:
        """Forget `flight`, if it is still the one registered for `key`."""
        if self.get(key) is flight:
            del self[key]

    def start(
        self,
        key: K,
        work: Callable[[Flight[T]], Coroutine[Any, Any, T]],
        tasks: set[asyncio.Task[Any]],
    ) -> Flight[T]:
        """Run `work(flight)` in a task of its own, which no waiter's cancellation reaches.

        The work may `publish` its result early and go on; its waiters get the task's outcome
        otherwise. The flight stays registered until the task ends, so that callers arriving
        meanwhile join it instead of starting the same work again.

        Args:
            key: What the work is for.
            work: Builds the coroutine, given its flight.
            tasks: Holds a strong reference to the task until it ends.
        """
        flight = self.open(key)
        task = asyncio.ensure_future(work(flight))
        tasks.add(task)

        def done(task: asyncio.Task[T]) -> None:
            tasks.discard(task)
            self.close(key, flight)
            if task.cancelled():
                if not flight.future.done():
                    flight.future.cancel()
                return
            exception = task.exception()
            if exception is not None:
                flight.fail(exception)
            else:
                flight.publish(task.result())

        task.add_done_callback(done)
        return flight

    async def run(self, key: K, work: Callable[[], Awaitable[T]]) -> T:
        """Join the work running for `key`, or do it in this task and share the outcome.

        No task is created: the first caller does the work itself, and the callers arriving
        meanwhile wait for it. If that caller is cancelled, one of them does the work again.
        """
        while (running := self.get(key)) is not None:
            try:
                return await running.wait()
            except _Abandoned:
                continue
        flight: Flight[T] = self._register(key, Flight())
        try:
            result = await work()
        except BaseException as exc:
            self.close(key, flight)
            flight.fail(exc if isinstance(exc, Exception) else _Abandoned())
            raise
        self.close(key, flight)
        flight.publish(result)
        return result
