"""The core benchmark still runs (its figures are read by people, not asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_core_benchmark_runs_quick() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_core", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    for section in (
        "hit get",
        "hit get_or_load",
        "set",
        "stampede",
        "stale-while-revalidate",
        "memory for",
        "import cost",
    ):
        assert f"## {section}" in completed.stdout
    assert "polycache Cache.get" in completed.stdout
    assert "loader calls per stampede: 1" in completed.stdout
