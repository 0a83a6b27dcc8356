"""scripts/charts.py: the committed charts are drawn from the committed data, and draw it right."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"


def charts_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("charts", ROOT / "scripts" / "charts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bars(svg: str) -> dict[str, tuple[float, str]]:
    """Row label -> (bar width, fill colour), read back from the SVG."""
    root = ElementTree.fromstring(svg)
    labels = [
        text.text or "" for text in root.iter(f"{SVG}text") if text.get("text-anchor") == "end"
    ]
    rectangles = [rect for rect in root.iter(f"{SVG}rect") if rect.get("height") == "16"]
    return {
        label: (float(rect.get("width", "nan")), rect.get("fill", ""))
        for label, rect in zip(labels, rectangles, strict=True)
    }


def test_the_committed_charts_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/charts.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((ROOT / "docs" / "data" / "bench_core.json").read_text())
    for figure in data["figures"]:
        svg = (ROOT / "docs" / "charts" / f"bench_core-{figure['id']}.svg").read_text()
        assert set(bars(svg)) == set(figure["rows"])


def test_a_chart_has_one_bar_per_row_coloured_by_kind() -> None:
    figure: dict[str, Any] = {
        "id": "x",
        "title": "hit get",
        "unit": "ns/op",
        "baseline": "floor",
        "goal": "polycache <= 2.5x",
        "rows": {"floor": 100.0, "polycache Cache.get": 250.0, "peer": 500.0},
    }
    svg = charts_module().chart(figure)
    drawn = bars(svg)
    assert drawn == {
        "floor": (54.0, "#8b949e"),
        "polycache Cache.get": (135.0, "#1f6feb"),
        "peer": (270.0, "#f0883e"),
    }
    assert "250 ns/op (2.50x)" in svg
    assert "goal: polycache &lt;= 2.5x" in svg
    assert "log scale" not in svg


def test_a_wide_spread_is_drawn_on_a_log_scale_and_negatives_get_no_bar() -> None:
    chart = charts_module().chart
    wide = chart(
        {"id": "w", "title": "t", "unit": "ns", "baseline": "a", "rows": {"a": 1.0, "b": 100.0}}
    )
    assert "log scale" in wide
    widths = {label: width for label, (width, _) in bars(wide).items()}
    assert widths["b"] == 270.0
    assert 0 < widths["a"] < 270.0 / 5
    negative = chart(
        {"id": "n", "title": "t", "unit": "ms", "baseline": None, "rows": {"a": -2.0, "b": 4.0}}
    )
    assert {label: width for label, (width, _) in bars(negative).items()} == {
        "a": 0.0,
        "b": 270.0,
    }
    assert "x)" not in negative  # no baseline, no ratios
