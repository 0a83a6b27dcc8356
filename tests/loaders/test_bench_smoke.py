"""The AWS benchmark runs end to end in its quick mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.moto
def test_the_aws_benchmark_quick_run_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_aws", "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )

    assert result.returncode == 0, result.stderr
    for contender in ("polycache", "powertools parameters", "lambda-cache", "raw aioboto3"):
        assert contender in result.stdout
    assert "cold start" in result.stdout
