"""pytest fixtures for the Momento-protocol server: one per session, reset before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from polycache import Cache
from polycache.backends.momento import DEFAULT_NAMESPACE, MomentoBackend
from polycache.backends.near import NearCacheBackend
from tests.stand_ins.momento_server import MomentoStandIn

TEST_CACHE = "polycache-test"


def item_name(key: str) -> str:
    """The Momento item a key is stored as, in a namespace that was never cleared."""
    return f"{DEFAULT_NAMESPACE}:0:{key}"


async def connected(cache: Cache, momento: MomentoStandIn) -> None:
    """Wait until the Cache's Momento backend is connected, then forget the calls so far."""
    backend = cache.backend
    remote = backend.remote if isinstance(backend, NearCacheBackend) else backend
    assert isinstance(remote, MomentoBackend)
    await remote.connect()
    momento.clear_calls()


@pytest.fixture(scope="session")
def momento_server() -> Iterator[MomentoStandIn]:
    server = MomentoStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def momento(momento_server: MomentoStandIn) -> MomentoStandIn:
    """The server, reset: no faults, any key accepted, one empty cache named `TEST_CACHE`."""
    momento_server.reset(caches=[TEST_CACHE])
    return momento_server


@pytest.fixture
async def momento_backend(momento: MomentoStandIn) -> AsyncIterator[MomentoBackend]:
    """A fresh MomentoBackend on the reset server's empty test cache."""
    backend = MomentoBackend.from_url(momento.url(TEST_CACHE))
    yield backend
    await backend.aclose()


@pytest.fixture
async def near_momento_backend(momento: MomentoStandIn) -> AsyncIterator[NearCacheBackend]:
    """A near-cache in front of a fresh MomentoBackend on the reset server's empty test cache."""
    backend = NearCacheBackend(
        MomentoBackend.from_url(momento.url(TEST_CACHE)), local_max_entries=100, local_ttl=30
    )
    yield backend
    await backend.aclose()
