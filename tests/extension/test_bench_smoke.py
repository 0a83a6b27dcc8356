"""The extension benchmark runs (a smoke run; the figures themselves are for people)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.extension
@pytest.mark.moto
def test_bench_extension_quick_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_extension", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "## get of one 100-byte value" in result.stdout
    figures = json.loads(result.stdout[result.stdout.index("{") :])
    assert set(figures["ratios"]) == {
        "extension:// get",
        "Cache(extension://).get",
        "httpx keep-alive",
        "httpx new connection",
        "aioboto3 -> moto",
    }
