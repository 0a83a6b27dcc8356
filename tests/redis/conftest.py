"""A redis-server of a test's own, for tests that stop, pause or kill it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stand_ins.redis_server import RedisServer


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()
