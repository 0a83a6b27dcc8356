"""Observers: what a cache reports as it works, to any number of listeners.

An observer implements `Observer` (or subclasses `BaseObserver` and overrides what it wants).
`Cache(..., observers=[...])` calls each one; an observer that raises is logged once and never
breaks a cache operation.

Fresh hits are reported in aggregate, as a count (`hits`), never one call per hit: the memory
hit path does no per-hit work beyond a counter, with or without observers. The count is handed
over before each other event and whenever `Cache.report()` is called (`lambda_handler` does it
after each invocation).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "BackendOutcome",
    "BaseObserver",
    "BreakerState",
    "LoadOutcome",
    "LookupOutcome",
    "Observer",
    "Observers",
]

logger = logging.getLogger("polycache")

LookupOutcome = Literal["stale", "miss"]
"""`stale`: served a stale value (a refresh runs); `miss`: no usable entry."""

LoadOutcome = Literal["ok", "not_found", "error", "timeout", "stale_served"]
"""How a load ended: a value, the source's "not found", a failure, `load_timeout`, or a failure
for which the previous value was served (stale-if-error)."""

BackendOutcome = Literal["ok", "error", "timeout", "skipped"]
"""How a backend call ended; `skipped`: not attempted (the breaker is open)."""

BreakerState = Literal["closed", "open", "half_open"]
"""A backend's circuit breaker: `closed` (calls go through), `open` (calls are skipped),
`half_open` (one probe call is let through)."""


@runtime_checkable
class Observer(Protocol):
    """Receives what a cache does. Every method must return quickly and not block."""

    def hits(self, count: int) -> None:
        """`count` more gets were answered by fresh entries since the last report."""
        ...

    def lookup(self, key: str, outcome: LookupOutcome) -> None:
        """A get found a stale entry or none."""
        ...

    def load(self, key: str, seconds: float, outcome: LoadOutcome) -> None:
        """A load (or a key of a batch load) ended after `seconds`."""
        ...

    def backend_call(self, operation: str, seconds: float, outcome: BackendOutcome) -> None:
        """A backend operation (`get`, `set`, `delete`, `get_many`, ...) ended."""
        ...

    def breaker(self, state: BreakerState) -> None:
        """The backend's circuit breaker changed state."""
        ...

    def invalidation(self, keys: Sequence[str], reason: str) -> None:
        """Entries were invalidated: `reason` is `delete`, `set`, `tags`, `clear` or `remote`."""
        ...


class BaseObserver:
    """An observer that ignores everything: subclass it and override what you need."""

    def hits(self, count: int) -> None:
        """Ignored."""

    def lookup(self, key: str, outcome: LookupOutcome) -> None:
        """Ignored."""

    def load(self, key: str, seconds: float, outcome: LoadOutcome) -> None:
        """Ignored."""

    def backend_call(self, operation: str, seconds: float, outcome: BackendOutcome) -> None:
        """Ignored."""

    def breaker(self, state: BreakerState) -> None:
        """Ignored."""

    def invalidation(self, keys: Sequence[str], reason: str) -> None:
        """Ignored."""


class Observers:
    """Calls every observer; an observer that raises is logged once and then skipped silently.

    Args:
        observers: The observers, in call order.
    """

    __slots__ = ("_failed", "observers")

    def __init__(self, observers: Iterable[Observer]) -> None:
        self.observers: tuple[Observer, ...] = tuple(observers)
        self._failed: set[int] = set()

    def _failure(self, observer: Observer, exc: Exception) -> None:
        if id(observer) not in self._failed:
            self._failed.add(id(observer))
            logger.warning(
                "polycache: observer %r raised %s; its later errors are not logged",
                observer,
                type(exc).__name__,
            )

    def _emit(self, method: str, *arguments: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(*arguments)
            except Exception as exc:  # an observer never breaks a cache operation
                self._failure(observer, exc)

    def hits(self, count: int) -> None:
        """Report `count` fresh hits."""
        self._emit("hits", count)

    def lookup(self, key: str, outcome: LookupOutcome) -> None:
        """Report a stale or missing lookup."""
        self._emit("lookup", key, outcome)

    def load(self, key: str, seconds: float, outcome: LoadOutcome) -> None:
        """Report a finished load."""
        self._emit("load", key, seconds, outcome)

    def backend_call(self, operation: str, seconds: float, outcome: BackendOutcome) -> None:
        """Report a finished backend call."""
        self._emit("backend_call", operation, seconds, outcome)

    def breaker(self, state: BreakerState) -> None:
        """Report a breaker change."""
        self._emit("breaker", state)

    def invalidation(self, keys: Sequence[str], reason: str) -> None:
        """Report invalidated keys."""
        self._emit("invalidation", keys, reason)
