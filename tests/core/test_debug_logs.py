"""The `polycache` logger tells each miss, load, refresh, stale serve and invalidation at DEBUG,
with the key and the duration, never the value."""

from __future__ import annotations

import logging

import pytest

from polycache import Cache
from tests.conftest import FakeClock

SECRET = "s3cr3t-value-never-logged"


async def test_debug_records_name_keys_and_durations_never_values(
    caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    cache = Cache(ttl=1, stale_ttl=60, clock=clock)

    async def load(name: str) -> str:
        return SECRET

    cache.register_loader("item", load)
    with caplog.at_level(logging.DEBUG, logger="polycache"):
        await cache.get("item:a")  # miss, load
        clock.advance(2)
        await cache.get("item:a")  # stale, background refresh
        await cache.delete("item:a")
        await cache.set("tagged", SECRET, tags=["t"])
        await cache.invalidate_tags("t")
    messages = [record.getMessage() for record in caplog.records if record.name == "polycache"]
    assert "polycache: miss 'item:a'" in messages
    assert any(
        m.startswith("polycache: loaded 'item:a' in ") and m.endswith(": ok") for m in messages
    )
    assert "polycache: serving 'item:a' stale" in messages
    assert "polycache: refreshing 'item:a' in the background" in messages
    assert "polycache: invalidated 'item:a' (delete)" in messages
    assert "polycache: invalidated 't' (tags)" in messages
    assert not [m for m in messages if SECRET in m]
    assert all(record.levelno == logging.DEBUG for record in caplog.records)
