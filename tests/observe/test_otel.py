"""OpenTelemetryObserver: exact instruments, data points and spans, read by the SDK's in-memory
readers."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from polycache import Cache, ConfigurationError, LoaderError, Observer
from tests.conftest import FakeClock
from tests.core.fakes import BytesBackend, CountingLoader
from tests.observe.helpers import Telemetry, every_event


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.meter_provider.shutdown()
    telemetry.tracer_provider.shutdown()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def point(name: str, **attributes: str) -> tuple[str, frozenset[tuple[str, Any]]]:
    return (name, frozenset((f"cache.{key}", value) for key, value in attributes.items()))


async def test_hits_misses_and_loads_become_exact_counts_and_load_spans(
    telemetry: Telemetry, clock: FakeClock
) -> None:
    observer = telemetry.observer()
    assert isinstance(observer, Observer)
    cache = Cache(ttl=10, stale_ttl=10, observers=[observer], clock=clock)
    loader = CountingLoader()
    loader.missing.add("gone")
    cache.register_loader("item", loader)
    for _ in range(3):
        await cache.get("item:a")  # a miss and a load, then two hits
    clock.advance(15)
    await cache.get("item:a")  # stale: served, refreshed in the background
    await asyncio.sleep(0.01)
    await cache.get("item:gone")
    loader.error = RuntimeError("down")
    with pytest.raises(LoaderError):
        await cache.get("item:b")
    cache.report()
    assert telemetry.points() == {
        point("polycache.hits"): 2,
        point("polycache.stale_hits"): 1,
        point("polycache.misses"): 3,
        point("polycache.loads", outcome="ok"): 2,
        point("polycache.loads", outcome="not_found"): 1,
        point("polycache.loads", outcome="error"): 1,
        point("polycache.errors", operation="load", outcome="error"): 1,
        point("polycache.load.duration", outcome="ok"): 2,
        point("polycache.load.duration", outcome="not_found"): 1,
        point("polycache.load.duration", outcome="error"): 1,
    }
    spans = telemetry.spans()
    assert [(span.name, attributes(span)) for span in spans] == [
        ("cache.load", {"cache.operation": "load", "cache.outcome": outcome, "cache.hit": False})
        for outcome in ("ok", "ok", "not_found", "error")
    ]
    assert [span.status.status_code for span in spans] == [StatusCode.UNSET] * 3 + [
        StatusCode.ERROR
    ]
    assert {span.kind for span in spans} == {SpanKind.INTERNAL}
    assert {span.instrumentation_scope.name for span in spans} == {"polycache"}  # type: ignore[union-attr]


async def test_backend_calls_become_spans_named_by_operation(telemetry: Telemetry) -> None:
    backend = BytesBackend()
    cache = Cache(backend, observers=[telemetry.observer()])
    await cache.set("k", 1)
    await cache.get("k")
    await cache.delete("k")
    backend.failing = True
    assert await cache.get("k") is None  # fails open
    spans = telemetry.spans()
    assert [(span.name, attributes(span)) for span in spans] == [
        ("cache.put", {"cache.operation": "set", "cache.outcome": "ok"}),
        ("cache.get", {"cache.operation": "get", "cache.outcome": "ok"}),
        ("cache.remove", {"cache.operation": "delete", "cache.outcome": "ok"}),
        ("cache.get", {"cache.operation": "get", "cache.outcome": "error"}),
    ]
    assert {span.kind for span in spans} == {SpanKind.CLIENT}
    assert spans[-1].status.status_code is StatusCode.ERROR
    points = telemetry.points()
    assert points[point("polycache.backend.duration", operation="get", outcome="ok")] == 1
    assert points[point("polycache.backend.duration", operation="get", outcome="error")] == 1
    assert points[point("polycache.backend.duration", operation="set", outcome="ok")] == 1
    assert points[point("polycache.errors", operation="get", outcome="error")] == 1
    assert point("polycache.errors", operation="set", outcome="ok") not in points


async def test_keys_are_recorded_only_when_asked(telemetry: Telemetry) -> None:
    for record_keys in (False, True):
        cache = Cache(observers=[telemetry.observer(record_keys=record_keys)])
        cache.register_loader("user", CountingLoader())
        await cache.get("user:42")
    without, with_key = telemetry.spans()
    assert "cache.key" not in attributes(without)
    assert attributes(with_key)["cache.key"] == "user:42"


async def test_a_load_span_has_the_loads_duration_and_the_current_parent(
    telemetry: Telemetry,
) -> None:
    cache = Cache(observers=[telemetry.observer()])
    cache.register_loader("slow", CountingLoader(delay=0.05))
    tracer = telemetry.tracer_provider.get_tracer("handler")
    with tracer.start_as_current_span("invocation") as parent:
        await cache.get("slow:a")
    load, invocation = telemetry.spans()
    assert load.name == "cache.load"
    assert load.parent is not None
    assert load.parent.span_id == parent.get_span_context().span_id
    assert load.start_time is not None and load.end_time is not None
    assert 0.05e9 <= load.end_time - load.start_time < 1e9
    assert invocation.start_time is not None and invocation.start_time <= load.start_time


async def test_breaker_changes_are_counted_by_state(telemetry: Telemetry) -> None:
    observer = telemetry.observer()
    observer.breaker("open")
    observer.breaker("half_open")
    observer.breaker("open")
    assert telemetry.points() == {
        ("polycache.breaker.changes", frozenset({("cache.breaker.state", "open")})): 2,
        ("polycache.breaker.changes", frozenset({("cache.breaker.state", "half_open")})): 1,
    }


def test_instruments_have_their_units(telemetry: Telemetry) -> None:
    observer = telemetry.observer()
    every_event(observer)
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    units = {
        metric.name: metric.unit for metric in data.resource_metrics[0].scope_metrics[0].metrics
    }
    assert units == {
        "polycache.hits": "{hit}",
        "polycache.stale_hits": "{hit}",
        "polycache.misses": "{miss}",
        "polycache.loads": "{load}",
        "polycache.errors": "{error}",
        "polycache.load.duration": "s",
        "polycache.backend.duration": "s",
        "polycache.breaker.changes": "{change}",
    }
    assert [span.name for span in telemetry.spans()] == ["cache.load", "cache.get"]


def test_the_module_without_the_extra_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "polycache.otel")
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)  # as if not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'polycache\[otel\]'"):
        importlib.import_module("polycache.otel")


def test_import_polycache_does_not_import_opentelemetry() -> None:
    code = "import sys, polycache; print(sorted(m for m in sys.modules if 'opentelemetry' in m))"
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    assert output.strip() == "[]"


async def test_a_stampede_is_one_load_span_and_every_caller_a_miss(telemetry: Telemetry) -> None:
    cache = Cache(observers=[telemetry.observer()])
    loader = CountingLoader(delay=0.02)
    cache.register_loader("item", loader)
    results = await asyncio.gather(*(cache.get("item:a") for _ in range(100)))
    assert set(results) == {"a#1"}
    assert [span.name for span in telemetry.spans()] == ["cache.load"]
    points = telemetry.points()
    assert points[point("polycache.misses")] == 100
    assert points[point("polycache.loads", outcome="ok")] == 1


async def test_a_failed_load_served_stale_is_an_error_span(
    telemetry: Telemetry, clock: FakeClock
) -> None:
    cache = Cache(ttl=1, stale_if_error=60, observers=[telemetry.observer()], clock=clock)
    loader = CountingLoader()
    cache.register_loader("item", loader)
    await cache.get("item:a")
    loader.error = RuntimeError("down")
    clock.advance(2)
    assert await cache.get("item:a") == "a#1"
    failed = telemetry.spans()[-1]
    assert attributes(failed)["cache.outcome"] == "stale_served"
    assert failed.status.status_code is StatusCode.ERROR
    assert (
        telemetry.points()[point("polycache.errors", operation="load", outcome="stale_served")] == 1
    )
