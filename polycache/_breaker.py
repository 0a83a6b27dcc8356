"""A circuit breaker for one backend: a dead backend costs microseconds, not a timeout per call.

After `threshold` consecutive failures or timeouts the breaker opens: calls are skipped at once
(a miss when failing open). After `cooldown` seconds one probe call goes through; its success
closes the breaker, its failure opens it for another cooldown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from polycache._observe import BreakerState

__all__ = ["Breaker"]

_CLOSED: Final = "closed"
_OPEN: Final = "open"
_HALF_OPEN: Final = "half_open"


class Breaker:
    """The state of one backend's circuit.

    Args:
        threshold: Consecutive failures that open the circuit.
        cooldown: Seconds the circuit stays open before one probe call is let through.
        on_change: Called with the new state whenever it changes.
        clock: Monotonic seconds; injectable for tests.
    """

    __slots__ = ("_clock", "_on_change", "cooldown", "failures", "opened_at", "state", "threshold")

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        on_change: Callable[[BreakerState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at = 0.0
        self.state: BreakerState = _CLOSED
        self._on_change = on_change
        self._clock = clock

    def allow(self) -> bool:
        """True if a call may go to the backend now (closed, or this is the one probe)."""
        state = self.state
        if state == _CLOSED:
            return True
        if state == _OPEN and self._clock() >= self.opened_at + self.cooldown:
            self._change(_HALF_OPEN)
            return True
        return False

    def succeeded(self) -> None:
        """A call succeeded: the circuit closes."""
        self.failures = 0
        if self.state != _CLOSED:
            self._change(_CLOSED)

    def failed(self) -> None:
        """A call failed or timed out: the circuit opens after enough of them, or a probe's."""
        self.failures += 1
        if self.state == _HALF_OPEN or self.failures >= self.threshold:
            self.opened_at = self._clock()
            if self.state != _OPEN:
                self._change(_OPEN)

    def _change(self, state: BreakerState) -> None:
        self.state = state
        if self._on_change is not None:
            self._on_change(state)
