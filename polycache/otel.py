"""OpenTelemetry metrics and traces for a cache: `Cache(observers=[OpenTelemetryObserver()])`.

Needs the `otel` extra (`pip install 'polycache[otel]'`, the OpenTelemetry API only; bring your
own SDK and exporters). `import polycache` does not import this module.

The instruments (`COUNTERS`, `DURATIONS`) and spans are listed with their units and attributes
on the docs' Observability page.
"""

from __future__ import annotations

from polycache._extras import require_extra

require_extra("polycache.otel", "otel", "opentelemetry.trace", "opentelemetry.metrics")

import time  # noqa: E402  (after the check: a missing extra is named, not an ImportError)
from typing import Final  # noqa: E402

from opentelemetry import metrics, trace  # noqa: E402
from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: E402

from polycache._emf import FAILED_LOADS  # noqa: E402
from polycache._observe import (  # noqa: E402
    BackendOutcome,
    BaseObserver,
    BreakerState,
    LoadOutcome,
    LookupOutcome,
)

__all__ = ["OpenTelemetryObserver"]

SPAN_NAMES: Final = {
    "get": "cache.get",
    "get_many": "cache.get",
    "set": "cache.put",
    "set_many": "cache.put",
    "delete": "cache.remove",
    "delete_many": "cache.remove",
}
"""Span name by backend operation; any other operation is `cache.{operation}`."""

COUNTERS: Final = {
    "polycache.hits": ("{hit}", "Gets answered by a fresh entry"),
    "polycache.stale_hits": ("{hit}", "Gets answered by a stale entry while it is refreshed"),
    "polycache.misses": ("{miss}", "Gets that found no usable entry"),
    "polycache.loads": ("{load}", "Loads from a source, by outcome"),
    "polycache.errors": ("{error}", "Failed loads and backend calls, by operation and outcome"),
    "polycache.breaker.changes": ("{change}", "Circuit breaker state changes, by new state"),
}
"""Counter name -> (unit, description)."""

DURATIONS: Final = {
    "polycache.load.duration": "Duration of loads from a source",
    "polycache.backend.duration": "Duration of backend calls",
}
"""Histogram name -> description; the unit is seconds (`s`)."""


class OpenTelemetryObserver(BaseObserver):
    """Reports a cache's hits, misses, loads and backend calls to OpenTelemetry.

    Counters and duration histograms (seconds) go to the meter `polycache`; loads and backend
    calls become spans of the tracer `polycache`, children of whatever span is current when they
    end (the handler's, say). The observer learns of a load or backend call once it has ended,
    so each span is made afterwards, with its real start and end times. Fresh hits are counted
    in aggregate (see `Cache.report`) and get no span: one would cost more than the hit.

    Span attributes: `cache.operation` (`load`, `get`, `set`, ...), `cache.outcome` (`ok`,
    `not_found`, `error`, `timeout`, `stale_served`, `skipped`), `cache.hit` (`false` on a load:
    a load is what a miss does), and on loads `cache.key` when `record_keys` is true. A failed
    call's span has status ERROR.

    Args:
        meter_provider: Where the instruments are made; by default the global one.
        tracer_provider: Where the spans go; by default the global one.
        record_keys: Put the cache key on load spans as `cache.key`. Off by default: keys can
            carry user identifiers.

    Example:
        ```python
        from polycache.otel import OpenTelemetryObserver

        cache = polycache.Cache.from_env(observers=[OpenTelemetryObserver()])
        ```
    """

    def __init__(
        self,
        *,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        record_keys: bool = False,
    ) -> None:
        from polycache import __version__

        self.record_keys = bool(record_keys)
        meter = metrics.get_meter("polycache", __version__, meter_provider)
        self._tracer = trace.get_tracer("polycache", __version__, tracer_provider)
        counters = {
            name: meter.create_counter(name, unit=unit, description=description)
            for name, (unit, description) in COUNTERS.items()
        }
        histograms = {
            name: meter.create_histogram(name, unit="s", description=description)
            for name, description in DURATIONS.items()
        }
        self._hits = counters["polycache.hits"]
        self._stale_hits = counters["polycache.stale_hits"]
        self._misses = counters["polycache.misses"]
        self._loads = counters["polycache.loads"]
        self._errors = counters["polycache.errors"]
        self._breaker_changes = counters["polycache.breaker.changes"]
        self._load_duration = histograms["polycache.load.duration"]
        self._backend_duration = histograms["polycache.backend.duration"]

    def __repr__(self) -> str:
        return f"OpenTelemetryObserver(record_keys={self.record_keys!r})"

    def hits(self, count: int) -> None:
        """Add `count` to `polycache.hits`."""
        self._hits.add(count)

    def lookup(self, key: str, outcome: LookupOutcome) -> None:
        """Count a stale hit or a miss."""
        (self._stale_hits if outcome == "stale" else self._misses).add(1)

    def load(self, key: str, seconds: float, outcome: LoadOutcome) -> None:
        """Count the load, record its duration and make its `cache.load` span."""
        self._loads.add(1, {"cache.outcome": outcome})
        self._load_duration.record(seconds, {"cache.outcome": outcome})
        failed = outcome in FAILED_LOADS
        if failed:
            self._errors.add(1, {"cache.operation": "load", "cache.outcome": outcome})
        attributes: dict[str, str | bool] = {
            "cache.operation": "load",
            "cache.outcome": outcome,
            "cache.hit": False,
        }
        if self.record_keys:
            attributes["cache.key"] = key
        self._span("cache.load", SpanKind.INTERNAL, seconds, attributes, failed)

    def backend_call(self, operation: str, seconds: float, outcome: BackendOutcome) -> None:
        """Record the call's duration, count a failure and make its span."""
        attributes = {"cache.operation": operation, "cache.outcome": outcome}
        self._backend_duration.record(seconds, attributes)
        failed = outcome in ("error", "timeout")
        if failed:
            self._errors.add(1, attributes)
        name = SPAN_NAMES.get(operation) or f"cache.{operation}"
        self._span(name, SpanKind.CLIENT, seconds, dict(attributes), failed)

    def breaker(self, state: BreakerState) -> None:
        """Count the change in `polycache.breaker.changes`."""
        self._breaker_changes.add(1, {"cache.breaker.state": state})

    def _span(
        self,
        name: str,
        kind: SpanKind,
        seconds: float,
        attributes: dict[str, str | bool],
        failed: bool,
    ) -> None:
        end = time.time_ns()
        span = self._tracer.start_span(
            name,
            kind=kind,
            attributes=attributes,
            start_time=end - max(0, int(seconds * 1e9)),
        )
        if failed:
            span.set_status(Status(StatusCode.ERROR, str(attributes["cache.outcome"])))
        span.end(end_time=end)
