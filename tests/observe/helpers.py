"""Shared by the observability tests: the EMF specification's checks, OTel's in-memory readers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from polycache.otel import OpenTelemetryObserver

SCHEMA = json.loads((Path(__file__).parent / "emf_schema.json").read_text())


def check_emf(document: dict[str, Any]) -> None:
    """The specification's schema, plus its rules that a schema cannot state."""
    jsonschema.validate(document, SCHEMA)
    for directive in document["_aws"]["CloudWatchMetrics"]:
        assert len(directive["Metrics"]) <= 100
        for dimension_set in directive["Dimensions"]:
            for name in dimension_set:
                assert isinstance(document[name], str), name
        for definition in directive["Metrics"]:
            value = document[definition["Name"]]
            assert isinstance(value, int | float) and not isinstance(value, bool), definition


Points = dict[tuple[str, frozenset[tuple[str, Any]]], Any]


class Telemetry:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.exporter = InMemorySpanExporter()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def observer(self, record_keys: bool = False) -> OpenTelemetryObserver:
        return OpenTelemetryObserver(
            meter_provider=self.meter_provider,
            tracer_provider=self.tracer_provider,
            record_keys=record_keys,
        )

    def points(self) -> Points:
        """(instrument, attributes) -> sum, or (count, unit) for a histogram."""
        data = self.reader.get_metrics_data()
        assert data is not None
        points: Points = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "polycache"
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        key = (metric.name, frozenset((point.attributes or {}).items()))
                        if isinstance(point, HistogramDataPoint):
                            assert metric.unit == "s"
                            points[key] = point.count
                        else:
                            assert isinstance(point, NumberDataPoint)
                            points[key] = point.value
        return points

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


def every_event(observer: OpenTelemetryObserver) -> None:
    """One event of each kind, so that every instrument has a data point."""
    observer.hits(1)
    observer.lookup("k", "stale")
    observer.lookup("k", "miss")
    observer.load("k", 0.1, "timeout")
    observer.backend_call("get_many", 0.1, "timeout")
    observer.breaker("open")
