"""Shared fixtures: a clean environment, an injectable clock, and the stand-in servers."""

from __future__ import annotations

import pytest

# Each stand-in's fixtures live beside it.
pytest_plugins = [
    "tests.stand_ins.moto_fixtures",
    "tests.stand_ins.extension_fixtures",
    "tests.stand_ins.momento_fixtures",
    "tests.stand_ins.lambda_api_fixtures",
    "tests.stand_ins.redis_fixtures",
]


class FakeClock:
    """An epoch clock that moves only when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's POLYCACHE_* or MOMENTO_* variables."""
    import os

    for name in list(os.environ):
        if name.startswith(("POLYCACHE_", "MOMENTO_")):
            monkeypatch.delenv(name)
