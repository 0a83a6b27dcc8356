"""The docs say what the code does: one reference page for the whole API, and the observability
page's metric names, units and examples match what the observers emit."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import polycache
from polycache._emf import COUNTS, LATENCIES
from tests.observe.helpers import Telemetry, check_emf, every_event

DOCS = Path(__file__).resolve().parents[2] / "docs"
RENDERING = re.compile(r"^::: (\S+)", re.MULTILINE)


def test_the_reference_page_renders_every_public_name_once() -> None:
    rendered = RENDERING.findall((DOCS / "reference.md").read_text())
    top_level = [name.removeprefix("polycache.") for name in rendered if name.count(".") == 1]
    assert sorted(top_level) == sorted(polycache.__all__)
    assert len(rendered) == len(set(rendered))


def test_no_other_page_renders_api_objects() -> None:
    elsewhere = {
        page.name: RENDERING.findall(page.read_text())
        for page in DOCS.glob("*.md")
        if page.name != "reference.md"
    }
    assert {page: names for page, names in elsewhere.items() if names} == {}


def observability() -> str:
    return (DOCS / "observability.md").read_text()


def test_the_emf_example_line_is_valid_and_names_real_metrics() -> None:
    (line,) = [text for text in observability().splitlines() if text.startswith('{"_aws"')]
    document = json.loads(line)
    check_emf(document)
    names = [metric["Name"] for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert names == [*COUNTS, *LATENCIES[:3]]


def test_the_emf_metric_table_lists_every_metric() -> None:
    table = re.findall(r"^\| `(\w+)`(?:, `(\w+)`, `(\w+)`)? \| (\w+) \|", observability(), re.M)
    documented = {name: unit for *names, unit in table for name in names if name}
    assert documented == {
        **dict.fromkeys(COUNTS, "Count"),
        **dict.fromkeys(LATENCIES, "Milliseconds"),
    }


def test_the_dashboard_uses_only_metrics_that_are_emitted() -> None:
    text = observability()
    block = text[text.index("<!-- dashboard -->") :]
    body = json.loads(block[block.index("{") : block.index("\n```", block.index("{"))])
    used: set[str] = set()
    for widget in body["widgets"]:
        for row in widget["properties"]["metrics"]:
            if isinstance(row[0], str):
                assert row[0] == "polycache"
                assert row[2] == "FunctionName"
                used.add(row[1])
    assert used <= {*COUNTS, *LATENCIES}
    assert {"Hits", "StaleHits", "Misses", "LoadTimeP99", "LoadErrors"} <= used


def test_the_instrument_table_matches_the_observer() -> None:
    rows = re.findall(
        r"^\| `(polycache\.[\w.]+)` \| (counter|histogram) \| `([^`]+)` \|", observability(), re.M
    )
    telemetry = Telemetry()
    observer = telemetry.observer()
    every_event(observer)
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    instruments: dict[str, Any] = {
        metric.name: (type(metric.data).__name__, metric.unit)
        for metric in data.resource_metrics[0].scope_metrics[0].metrics
    }
    kinds = {"counter": "Sum", "histogram": "Histogram"}
    assert {name: (kinds[kind], unit) for name, kind, unit in rows} == instruments
    telemetry.meter_provider.shutdown()
