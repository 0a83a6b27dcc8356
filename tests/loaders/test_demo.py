"""The demo script runs against its own moto server and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.moto
def test_the_demo_runs_and_shows_hits_stale_serves_and_refreshes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )

    assert result.returncode == 0, result.stderr
    output = result.stdout
    for status in ("miss", "hit", "stale", "notfound", "neg-hit"):
        assert f" {status} " in output
    summary = re.search(r"With polycache: (\d+) AWS calls", output)
    assert summary is not None
    assert 0 < int(summary.group(1)) < 60
    assert re.search(r"answered 304 \(no body\): [1-9]", output)
    assert "postgres://db-2/app" in output
