"""CloudWatch Embedded Metric Format: the cache's counts and latencies as one log line.

On Lambda, a JSON line written to stdout in the embedded metric format (EMF) becomes CloudWatch
metrics with no API call and no agent: the format Powertools' Metrics writes.
`lambda_handler(cache=cache, metrics=True)` attaches an `EmfMetrics` and writes a line after
each invocation in which the cache did anything.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TextIO

from polycache._errors import ConfigurationError
from polycache._observe import (
    BackendOutcome,
    BaseObserver,
    BreakerState,
    LoadOutcome,
    LookupOutcome,
)

__all__ = ["EmfMetrics"]

logger = logging.getLogger("polycache")

COUNTS: Final = (
    "Hits",
    "StaleHits",
    "Misses",
    "Loads",
    "LoadErrors",
    "BackendCalls",
    "BackendErrors",
    "BreakerOpens",
)
"""The count metrics of every line, in order (unit `Count`)."""

FAILED_LOADS: Final = frozenset({"error", "timeout", "stale_served"})
"""The load outcomes that count as errors (stale-if-error served the old value after a failure)."""

PERCENTILES: Final = (50, 90, 99)
LATENCIES: Final = tuple(
    f"{kind}TimeP{percentile}" for kind in ("Load", "Backend") for percentile in PERCENTILES
)
"""The latency metrics (unit `Milliseconds`), present when the interval had such a call."""

# The EMF specification's limits: a DimensionSet holds at most 9 keys, names 1..255 characters.
_MAX_DIMENSIONS = 9
_MAX_NAME = 255
# Durations kept per interval and kind; past it every second one is dropped (memory stays bounded
# however long `every_seconds` is).
_MAX_SAMPLES = 1024


class _Samples:
    """Durations of one interval, thinned evenly once there are more than `_MAX_SAMPLES`."""

    __slots__ = ("seen", "stride", "values")

    def __init__(self) -> None:
        self.values: list[float] = []
        self.stride = 1
        self.seen = 0

    def add(self, milliseconds: float) -> None:
        self.seen += 1
        if self.seen % self.stride:
            return
        values = self.values
        values.append(milliseconds)
        if len(values) >= _MAX_SAMPLES:
            del values[1::2]
            self.stride *= 2

    def percentiles(self, prefix: str) -> dict[str, float]:
        """Nearest-rank percentiles, named `{prefix}P50` and so on; none without a sample."""
        ordered = sorted(self.values)
        if not ordered:
            return {}
        count = len(ordered)
        return {
            f"{prefix}P{percentile}": round(ordered[math.ceil(percentile / 100 * count) - 1], 3)
            for percentile in PERCENTILES
        }


class EmfMetrics(BaseObserver):
    """An observer that writes the cache's metrics as CloudWatch EMF lines on stdout.

    Each line covers one interval: the counts (`Hits`, `StaleHits`, `Misses`, `Loads`,
    `LoadErrors`, `BackendCalls`, `BackendErrors`, `BreakerOpens`; unit `Count`) and the
    p50/p90/p99 of load and backend durations (`LoadTimeP50` ... `BackendTimeP99`;
    `Milliseconds`, present only when the interval had a load or a backend call). An interval in
    which nothing happened writes no line.

    Pass it to `lambda_handler(cache=cache, metrics=EmfMetrics(...))` (or `metrics=True` for
    the defaults), which attaches it to the cache and ends an interval after every
    `every_invocations` invocations, or once `every_seconds` have passed since the last line,
    whichever comes first. Give it to `lambda_handler` only, not to `Cache(observers=...)` as
    well: attached twice, it would count everything twice. Outside `lambda_handler`, attach it
    with `cache.add_observer` and call `flush()` yourself, after `cache.report()`.

    Args:
        namespace: The CloudWatch namespace of the metrics.
        dimensions: Dimension names and values applied to every metric. By default
            `{"FunctionName": ...}` from `AWS_LAMBDA_FUNCTION_NAME` when it is set, else none.
        every_invocations: Write a line every this many invocations; `None`: by time only.
        every_seconds: Write a line once this many seconds have passed since the last one;
            `None` (default): by invocations only.
        stream: Where lines go; by default `sys.stdout` at the time of writing.
        environ: Where `AWS_LAMBDA_FUNCTION_NAME` is read (default `os.environ`).
        clock: Epoch seconds, for the timestamps and `every_seconds`.

    Raises:
        ConfigurationError: A bad namespace, dimension or interval, named in the message.

    Example:
        ```python
        cache = polycache.Cache.from_env()

        @polycache.lambda_handler(cache=cache, metrics=polycache.EmfMetrics(namespace="shop"))
        async def handler(event, context): ...
        ```
    """

    def __init__(
        self,
        *,
        namespace: str = "polycache",
        dimensions: Mapping[str, str] | None = None,
        every_invocations: int | None = 1,
        every_seconds: float | None = None,
        stream: TextIO | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(namespace, str) or not 0 < len(namespace) <= _MAX_NAME:
            raise ConfigurationError(
                f"EmfMetrics namespace must be a str of 1 to {_MAX_NAME} characters, "
                f"got {namespace!r}"
            )
        if dimensions is None:
            function = (os.environ if environ is None else environ).get("AWS_LAMBDA_FUNCTION_NAME")
            dimensions = {"FunctionName": function} if function else {}
        self.namespace = namespace
        self.dimensions: dict[str, str] = _checked_dimensions(dimensions)
        if every_invocations is not None and (
            isinstance(every_invocations, bool)
            or not isinstance(every_invocations, int)
            or every_invocations < 1
        ):
            raise ConfigurationError(
                f"EmfMetrics every_invocations must be an int >= 1 or None, "
                f"got {every_invocations!r}"
            )
        if every_seconds is not None and (
            isinstance(every_seconds, bool)
            or not isinstance(every_seconds, int | float)
            or not every_seconds > 0
        ):
            raise ConfigurationError(
                f"EmfMetrics every_seconds must be a number of seconds > 0 or None, "
                f"got {every_seconds!r}"
            )
        if every_invocations is None and every_seconds is None:
            raise ConfigurationError(
                "EmfMetrics needs every_invocations or every_seconds (or both), got neither"
            )
        self.every_invocations = every_invocations
        self.every_seconds = every_seconds
        self._stream = stream
        self._clock = clock
        self._write_failed = False
        self._last_line = clock()
        self._reset()

    def __repr__(self) -> str:
        return (
            f"EmfMetrics(namespace={self.namespace!r}, dimensions={self.dimensions!r}, "
            f"every_invocations={self.every_invocations!r}, every_seconds={self.every_seconds!r})"
        )

    def _reset(self) -> None:
        self._counts: dict[str, int] = dict.fromkeys(COUNTS, 0)
        self._load_times = _Samples()
        self._backend_times = _Samples()
        self._invocations = 0

    # -- the Observer protocol ----------------------------------------------------------------

    def hits(self, count: int) -> None:
        """Count fresh hits."""
        self._counts["Hits"] += count

    def lookup(self, key: str, outcome: LookupOutcome) -> None:
        """Count a stale hit or a miss."""
        self._counts["StaleHits" if outcome == "stale" else "Misses"] += 1

    def load(self, key: str, seconds: float, outcome: LoadOutcome) -> None:
        """Count a load (failed: `error`, `timeout`, `stale_served`) and keep its duration."""
        counts = self._counts
        counts["Loads"] += 1
        if outcome in FAILED_LOADS:
            counts["LoadErrors"] += 1
        self._load_times.add(seconds * 1000)

    def backend_call(self, operation: str, seconds: float, outcome: BackendOutcome) -> None:
        """Count a backend call (failed: `error`, `timeout`) and keep its duration."""
        counts = self._counts
        if outcome == "skipped":
            return
        counts["BackendCalls"] += 1
        if outcome != "ok":
            counts["BackendErrors"] += 1
        self._backend_times.add(seconds * 1000)

    def breaker(self, state: BreakerState) -> None:
        """Count the breaker opening."""
        if state == "open":
            self._counts["BreakerOpens"] += 1

    # -- intervals ----------------------------------------------------------------------------

    def invocation_ended(self) -> None:
        """End of one invocation: write a line if the interval is due (`lambda_handler` calls it).

        Never raises: a line that cannot be written is logged once and dropped.
        """
        self._invocations += 1
        every_invocations, every_seconds = self.every_invocations, self.every_seconds
        if (every_invocations is not None and self._invocations >= every_invocations) or (
            every_seconds is not None and self._clock() - self._last_line >= every_seconds
        ):
            self.flush()

    def document(self) -> dict[str, Any] | None:
        """The EMF document of the interval so far, or `None` if nothing happened in it."""
        counts = self._counts
        if not any(counts.values()):
            return None
        latencies = {
            **self._load_times.percentiles("LoadTime"),
            **self._backend_times.percentiles("BackendTime"),
        }
        definitions = [{"Name": name, "Unit": "Count"} for name in counts]
        definitions += [{"Name": name, "Unit": "Milliseconds"} for name in latencies]
        return {
            "_aws": {
                "Timestamp": int(self._clock() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [list(self.dimensions)],
                        "Metrics": definitions,
                    }
                ],
            },
            **self.dimensions,
            **counts,
            **latencies,
        }

    def flush(self) -> None:
        """Write the interval's line (none if nothing happened) and start a new interval."""
        document = self.document()
        self._reset()
        self._last_line = self._clock()
        if document is None:
            return
        import json  # only when a line is written: `import polycache` stays cheap

        line = json.dumps(document, separators=(",", ":")) + "\n"
        stream = sys.stdout if self._stream is None else self._stream
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError) as exc:  # a closed or broken stdout never fails a handler
            if not self._write_failed:
                self._write_failed = True
                logger.warning("polycache: EMF metrics line not written: %r", exc)


def _checked_dimensions(dimensions: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(dimensions, Mapping):
        raise ConfigurationError(
            f"EmfMetrics dimensions must be a mapping of str to str, got {dimensions!r}"
        )
    if len(dimensions) > _MAX_DIMENSIONS:
        raise ConfigurationError(
            f"EmfMetrics takes at most {_MAX_DIMENSIONS} dimensions (the EMF limit), "
            f"got {len(dimensions)}"
        )
    reserved: Sequence[str] = (*COUNTS, *LATENCIES, "_aws")
    for name, value in dimensions.items():
        if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME or name in reserved:
            raise ConfigurationError(
                f"EmfMetrics dimension names are str of 1 to {_MAX_NAME} characters other than "
                f"the metric names, got {name!r}"
            )
        if not isinstance(value, str) or not value:
            raise ConfigurationError(
                f"EmfMetrics dimension {name!r} needs a non-empty str value, got {value!r}"
            )
    return dict(dimensions)
