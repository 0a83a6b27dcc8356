"""Every benchmark still runs (a quick smoke run; its figures are read by people, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# module -> what its output must show: its sections and contenders
EXPECTED = {
    "bench_core": [
        "## hit get",
        "## hit get with observers",
        "one no-op observer",
        "OpenTelemetry adapter",
        "## hit get_or_load",
        "## set",
        "## stampede",
        "## stale-while-revalidate",
        "## memory for",
        "## import cost",
        "polycache Cache.get",
        "cachetools TTLCache",
        "aiocache SimpleMemoryCache",
        "cashews mem://",
        "async-lru",
        "Powertools",
        "lambda-cache",
        "loader calls per stampede: 1",
    ],
    "bench_api": [
        "## memoized call, hit",
        "## sync bridge, hit",
        "polycache @cache.cached (default key)",
        "async-lru @alru_cache",
        "cashews @cache",
        "polycache cache.sync.get",
        "Powertools get_parameter (warm)",
    ],
    "bench_expiry": [
        "## expiry wave",
        "## hot key",
        "polycache ttl_jitter=0.0",
        "polycache ttl_jitter=0.1",
        "polycache early_refresh=True",
        "async-lru alru_cache(ttl=...)",
        "cashews @cache.early",
        "callers waited",
    ],
    "bench_aws": [
        "polycache",
        "powertools parameters",
        "lambda-cache",
        "raw aioboto3",
        "cold start",
    ],
    "bench_extension": [
        "## get of one 100-byte value",
        "extension:// get",
        "httpx keep-alive",
        "httpx new connection",
        "aioboto3 -> moto",
        "## asyncio.run per invocation",
    ],
    "bench_leases": [
        "## 8 processes miss one hot key together (momento",
        "## 8 processes miss one hot key together (extension",
        "## 8 processes miss one hot key together (redis",
        "one load (1 process alone, median)",
        "with leases",
        "without leases",
        "goal: 1 loader call per round:",
    ],
    "bench_momento": ["## get", "## set", "## near-cache hit", "raw CacheClientAsync"],
    "bench_redis": [
        "## get of one value",
        "## get_many of 100 keys",
        "## near-cache hit",
        "## cluster get_many",
        "## import cost and first call",
        "raw redis.asyncio GET + json.loads",
        "polycache Cache.get",
        "raw per-slot MGETs, concurrently",
        "first Cache.get (connects)",
    ],
    "bench_fleet": [
        "## invalidation delay across processes (momento)",
        "near-cache + Momento Topics",
        "## invalidation delay across processes (redis)",
        "near-cache + Redis pub/sub",
        "local_ttl=1 s only",
        "## the writer's set",
    ],
}


# modules that can write their figures as data (--json), which scripts/charts.py draws
WRITES_JSON = {"bench_core"}


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_benchmark_quick_run(module: str, tmp_path: Path) -> None:
    data = tmp_path / f"{module}.json"
    json_option = ["--json", str(data)] if module in WRITES_JSON else []
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--quick", *json_option],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    missing = [text for text in EXPECTED[module] if text not in result.stdout]
    assert not missing, f"{module} output lacks {missing}:\n{result.stdout[-3000:]}"
    if module in WRITES_JSON:
        figures = json.loads(data.read_text())["figures"]
        assert [figure["id"] for figure in figures if figure["id"] == "hit-get-observers"]
        for figure in figures:
            assert figure["rows"] and figure["baseline"] in (None, *figure["rows"])
        charts = subprocess.run(
            [sys.executable, "scripts/charts.py", "--data", str(tmp_path), "--out", str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert charts.returncode == 0, charts.stderr
        assert len(list(tmp_path.glob(f"{module}-*.svg"))) == len(figures)
