"""The Momento benchmark runs (a smoke run; the figures themselves are for people)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.momento
def test_bench_momento_quick_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_momento", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for section in ("## get", "## set", "## near-cache hit"):
        assert section in result.stdout
    assert '"ratios"' in result.stdout
