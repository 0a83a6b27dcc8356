"""Worker processes for the fleet tests, on each backend that pushes invalidations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fleet.processes import LONG_LOCAL_TTL, FleetProcess, Spawn
from tests.stand_ins.momento_fixtures import TEST_CACHE
from tests.stand_ins.momento_server import MomentoStandIn
from tests.stand_ins.redis_server import RedisServer


@pytest.fixture
def momento_spawn(momento: MomentoStandIn) -> Iterator[Spawn]:
    """Starts worker processes on the reset stand-in; stops them (by PID) after the test."""
    started: list[FleetProcess] = []

    def start(local_ttl: float = LONG_LOCAL_TTL, ttl: float = 300.0) -> FleetProcess:
        process = FleetProcess(momento.url(TEST_CACHE, local_ttl=local_ttl), ttl=ttl)
        started.append(process)
        assert process.call("wait_connected", timeout=10.0) == {"connected": True}
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def fleet_redis() -> Iterator[RedisServer]:
    """A server of this module's own: its tests change the default user's ACL."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_spawn(fleet_redis: RedisServer) -> Iterator[Spawn]:
    """Starts worker processes on the flushed server; stops them (by PID) after the test."""
    client = fleet_redis.client()
    client.acl_setuser("default", enabled=True, nopass=True, commands=["+@all"], keys=["*"])
    client.flushall()
    started: list[FleetProcess] = []

    def start(local_ttl: float = LONG_LOCAL_TTL) -> FleetProcess:
        url = f"{fleet_redis.url}?local_max_entries=100&local_ttl={local_ttl:g}"
        process = FleetProcess(url)
        started.append(process)
        assert process.call("wait_connected", timeout=10.0) == {"connected": True}
        return process

    yield start
    for process in started:
        process.stop()
