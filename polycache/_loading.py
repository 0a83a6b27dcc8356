"""Loading: one load per key at a time, bounded by `load_timeout`, with stale-if-error.

`LoopState` is what lives as long as one event loop (running loads, shared reads, background
tasks); the Cache replaces it in one assignment when the loop changes, since futures and tasks
of a finished loop can never complete. `Loading` runs loads and lives as long as the Cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

from polycache._contracts import Entry
from polycache._errors import ConfigurationError, LoaderError, PolycacheError, SourceNotFound
from polycache._flight import Flight, Flights
from polycache._observe import LoadOutcome, Observers
from polycache._policy import Policy
from polycache._routing import Route, check_awaitable
from polycache._stats import Counters
from polycache._storage import MemoryStorage, RemoteStorage

__all__ = ["Loading", "LoopState"]

logger = logging.getLogger("polycache")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()

# How long a lease lasts when loads have no load_timeout: a lost holder blocks nobody longer.
_LEASE_SECONDS: Final = 30.0

Batch = list[tuple[str, Route, Entry | None]]
"""Keys of one batch loader to load together: (key, route, previous entry)."""


class LoopState:
    """What lives as long as one event loop.

    Attributes:
        loop: The loop.
        loads: The load running for each key.
        reads: The backend read running for each key (remote backends).
        tasks: Loads, batches and stores nobody awaits, held until done.
    """

    __slots__ = ("loads", "loop", "reads", "tasks")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.loads: Flights[str, Entry | None] = Flights()
        self.reads: Flights[str, Entry | None] = Flights()
        self.tasks: set[asyncio.Task[Any]] = set()

    def track(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coroutine` in a task held until it is done (never collected mid-flight)."""
        task = asyncio.ensure_future(coroutine)
        tasks = self.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    async def cancel(self) -> None:
        """Cancel every task still running and wait for them to end."""
        tasks = [task for task in self.tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class Loading:
    """Runs loads and stores what they return.

    Args:
        storage: Where loaded entries are stored.
        counters: Where loads and their failures are counted.
        clock: Returns epoch seconds.
    """

    __slots__ = ("clock", "counters", "lease_wait", "observers", "storage")

    def __init__(
        self,
        storage: MemoryStorage | RemoteStorage,
        counters: Counters,
        clock: Callable[[], float],
    ) -> None:
        self.storage = storage
        self.counters = counters
        self.clock = clock
        self.observers: Observers | None = None
        # Seconds to wait for another process's load of a key (shared backends only).
        self.lease_wait = 0.0

    def start(
        self,
        state: LoopState,
        key: str,
        route: Route,
        previous: Entry | None,
        *,
        force: bool,
    ) -> Flight[Entry | None]:
        """Start loading `key`; the waiters of the returned flight get the new entry.

        Args:
            state: The running loop's state.
            key: The key.
            route: Its loader and policy.
            previous: The entry it replaces, if any (revalidated, or served if the load fails).
            force: A `refresh`: a failure is raised even if `previous` could stand in.
        """
        return state.loads.start(
            key,
            lambda flight: self._load(flight, key, route, previous, serve_stale=not force),
            state.tasks,
        )

    async def _load(
        self,
        flight: Flight[Entry | None],
        key: str,
        route: Route,
        previous: Entry | None,
        *,
        serve_stale: bool,
    ) -> Entry | None:
        storage = self.storage
        if not storage.leases or not self.lease_wait:
            return await self._load_here(flight, key, route, previous, serve_stale=serve_stale)
        # Of all the processes sharing the backend, the one holding the key's lease loads it;
        # the others serve their stale value, or wait for what the holder stores.
        held = await storage.take_lease(key, route.policy.load_timeout or _LEASE_SECONDS)
        if held is False:
            now = self.clock()
            if previous is not None and not previous.negative and now < previous.stale_until:
                return previous
            self.counters.lease_waits += 1
            stored = await storage.wait_for(key, self.lease_wait)
            if stored is not None:
                return stored
            # The holder did not store in time (it died, or its load is slow): load here.
        try:
            return await self._load_here(flight, key, route, previous, serve_stale=serve_stale)
        finally:
            if held:
                await storage.release_lease(key)

    async def _load_here(
        self,
        flight: Flight[Entry | None],
        key: str,
        route: Route,
        previous: Entry | None,
        *,
        serve_stale: bool,
    ) -> Entry | None:
        self.counters.loads += 1
        policy = route.policy
        deadline = asyncio.timeout(policy.load_timeout)
        started = time.perf_counter()
        try:
            async with deadline:
                conditional = route.conditional
                if (
                    conditional is not None
                    and previous is not None
                    and previous.validator is not None
                    and not previous.negative
                ):
                    loaded = await conditional.load_conditional(route.name, previous.validator)
                    seconds = time.perf_counter() - started
                    if loaded.modified:
                        entry = policy.entry(loaded.value, self.clock(), loaded.validator, seconds)
                    else:
                        entry = policy.entry(
                            previous.value, self.clock(), previous.validator, seconds
                        )
                else:
                    value = await check_awaitable(route.load(route.name), key)
                    entry = policy.loaded(value, self.clock(), time.perf_counter() - started)
        except SourceNotFound:
            entry = policy.negative(self.clock())
        except ConfigurationError:
            # A misuse (a sync loader, a malformed key) is no outage: no stale value hides it.
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            timed_out = deadline.expired()
            try:
                stood_in = self.stale_or_raise(
                    key, previous, policy, exc, serve_stale=serve_stale, timed_out=timed_out
                )
            except Exception:
                self._report(key, started, "timeout" if timed_out else "error")
                raise
            self._report(key, started, "stale_served")
            return stood_in
        self._report(key, started, "not_found" if entry.negative else "ok")
        # The waiters have their answer before the entry is stored: a slow backend delays
        # nobody, and the flight stays registered until the store is done.
        tags = route.tag_names()  # a misuse here reaches the waiters, not a background task
        flight.publish(entry)
        if not flight.superseded:
            await self.storage.store(key, entry, tags)
        return entry

    def _report(self, key: str, started: float, outcome: LoadOutcome) -> None:
        seconds = time.perf_counter() - started
        logger.debug("polycache: loaded %r in %.1f ms: %s", key, seconds * 1000, outcome)
        if self.observers is not None:
            self.observers.load(key, seconds, outcome)

    def stale_or_raise(
        self,
        key: str,
        previous: Entry | None,
        policy: Policy,
        exc: Exception,
        *,
        serve_stale: bool = True,
        timed_out: bool = False,
    ) -> Entry:
        """The previous entry if it may stand in for the failed load; else raise `LoaderError`."""
        counters = self.counters
        counters.load_errors += 1
        if timed_out:
            counters.load_timeouts += 1
        if serve_stale and policy.may_stand_in(previous, self.clock()):
            logger.warning(
                "polycache: loading %r failed (%s); serving the previous value",
                key,
                "load_timeout" if timed_out else type(exc).__name__,
            )
            assert previous is not None
            return previous
        if timed_out:
            raise LoaderError(
                f"loading {key!r} took longer than load_timeout ({policy.load_timeout} s)",
                key=key,
            ) from exc
        if isinstance(exc, LoaderError):
            # The loader knows its name, the Cache knows the key it was registered under. The
            # error keeps its type (a source's own kind of failure) and gains the key.
            exc.key = key
            raise exc
        if isinstance(exc, ConfigurationError):
            raise exc
        raise LoaderError(f"loading {key!r} failed: {type(exc).__name__}", key=key) from exc

    def start_batch(self, state: LoopState, batch: Batch) -> dict[str, Flight[Entry | None]]:
        """Start loading the keys of one batch loader together; a flight per key."""
        loads = state.loads
        flights = {key: loads.open(key) for key, _, _ in batch}
        task = state.track(self._load_batch(batch, flights))

        def done(task: asyncio.Task[Any]) -> None:
            for key, flight in flights.items():
                loads.close(key, flight)
                if not flight.future.done():
                    flight.future.cancel()

        task.add_done_callback(done)
        return flights

    async def _load_batch(self, batch: Batch, flights: dict[str, Flight[Entry | None]]) -> None:
        first = batch[0][1]
        loader = first.batch
        assert loader is not None
        self.counters.loads += len(batch)
        deadline = asyncio.timeout(first.policy.load_timeout)
        started = time.perf_counter()
        values: Any
        try:
            async with deadline:
                values = await loader.load_many([route.name for _, route, _ in batch])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            values = {route.name: exc for _, route, _ in batch}
        timed_out = deadline.expired()
        seconds = time.perf_counter() - started
        now = self.clock()
        for key, route, previous in batch:
            flight = flights[key]
            value = values.get(route.name, _MISSING)
            try:
                if value is _MISSING or isinstance(value, SourceNotFound):
                    entry = route.policy.negative(now)
                elif isinstance(value, Exception):
                    self._report(key, started, "timeout" if timed_out else "error")
                    flight.publish(
                        self.stale_or_raise(key, previous, route.policy, value, timed_out=timed_out)
                    )
                    continue
                else:
                    entry = route.policy.loaded(value, now, seconds)
                self._report(key, started, "not_found" if entry.negative else "ok")
                flight.publish(entry)
                if not flight.superseded:
                    await self.storage.store(key, entry, route.tag_names())
            except PolycacheError as exc:
                flight.fail(exc)
