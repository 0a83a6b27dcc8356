"""Draw the docs' benchmark charts from the figures the benchmarks wrote as data.

Run:  .venv/bin/python scripts/charts.py            # docs/data/*.json -> docs/charts/*.svg
      .venv/bin/python scripts/charts.py --check    # exit 1 if a committed chart is out of date

The data comes from `python -m benchmarks.bench_core --json docs/data/bench_core.json`. One SVG
per figure, `{benchmark}-{figure id}.svg`: a horizontal bar per contender, polycache in blue
beside its peers in orange and the baseline the ratios are to in grey, each labelled with its
value and ratio. Plain SVG written by hand, so the docs build needs no plotting library.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

ROOT = Path(__file__).resolve().parents[1]

WIDTH = 760
LABEL_RIGHT = 330  # labels end here, right-aligned
BAR_LEFT = 340
BAR_SPACE = 270  # the longest bar; its value label follows it
TOP = 58
ROW = 24
BAR = 16
COLOURS = {"baseline": "#8b949e", "polycache": "#1f6feb", "peer": "#f0883e"}
# Past this spread between the largest and smallest value, bars use a log scale: on a linear
# one polycache's bar beside a 600x peer would be a pixel wide.
LOG_SPREAD = 20


def kind(name: str, baseline: str | None) -> str:
    if name == baseline:
        return "baseline"
    return "polycache" if "polycache" in name.lower() else "peer"


def number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def bar_lengths(values: list[float]) -> tuple[list[float], bool]:
    positive = [value for value in values if value > 0]
    if not positive:
        return [0.0 for _ in values], False
    largest, smallest = max(positive), min(positive)
    if len(positive) == len(values) and largest / smallest > LOG_SPREAD:
        low = smallest / 2  # the smallest bar still has some length
        scale = BAR_SPACE / math.log(largest / low)
        return [math.log(value / low) * scale for value in values], True
    return [max(0.0, value) / largest * BAR_SPACE for value in values], False


def chart(figure: dict[str, Any]) -> str:
    """One figure as an SVG document."""
    rows: dict[str, float] = figure["rows"]
    baseline: str | None = figure.get("baseline")
    unit: str = figure["unit"]
    names, values = list(rows), [float(value) for value in rows.values()]
    lengths, log_scale = bar_lengths(values)
    base = rows.get(baseline) if baseline is not None else None
    notes = [f"{unit}, lower is better"]
    if base:
        notes.append(f"ratios to {baseline}")
    if log_scale:
        notes.append("log scale")
    if figure.get("goal"):
        notes.append(f"goal: {figure['goal']}")
    height = TOP + ROW * len(rows) + 12
    title = figure["title"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label={quoteattr(title)} '
        'font-family="-apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold" fill="#24292f">'
        f"{escape(title)}</text>",
        f'<text x="10" y="41" fill="#57606a">{escape("; ".join(notes))}</text>',
    ]
    for index, (name, value, length) in enumerate(zip(names, values, lengths, strict=True)):
        top = TOP + ROW * index
        middle = top + BAR / 2 + 4
        colour = COLOURS[kind(name, baseline)]
        label = f"{number(value)} {unit}"
        if base and value > 0:
            label += f" ({value / base:.2f}x)"
        weight = ' font-weight="bold"' if kind(name, baseline) == "polycache" else ""
        parts += [
            f'<text x="{LABEL_RIGHT}" y="{middle:.1f}" text-anchor="end" fill="#24292f"'
            f"{weight}>{escape(name)}</text>",
            f'<rect x="{BAR_LEFT}" y="{top}" width="{length:.1f}" height="{BAR}" fill="{colour}"/>',
            f'<text x="{BAR_LEFT + length + 6:.1f}" y="{middle:.1f}" fill="#24292f">'
            f"{escape(label)}</text>",
        ]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def charts(data: Path) -> dict[str, str]:
    """File name -> SVG text for every figure of every data file in `data`."""
    drawn: dict[str, str] = {}
    for path in sorted(data.glob("*.json")):
        run = json.loads(path.read_text())
        for figure in run["figures"]:
            drawn[f"{run['benchmark']}-{figure['id']}.svg"] = chart(figure)
    return drawn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "docs" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "charts")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    arguments = parser.parse_args(argv)
    drawn = charts(arguments.data)
    if not drawn:
        print(f"no figures in {arguments.data}/*.json", file=sys.stderr)
        return 1
    stale = [
        name
        for name, svg in drawn.items()
        if not (arguments.out / name).exists() or (arguments.out / name).read_text() != svg
    ]
    if arguments.check:
        for name in stale:
            print(f"out of date: {arguments.out / name}", file=sys.stderr)
        return 1 if stale else 0
    arguments.out.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (arguments.out / name).write_text(drawn[name])
    print(f"{len(drawn)} charts in {arguments.out} ({len(stale)} written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
