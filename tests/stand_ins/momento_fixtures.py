"""pytest fixtures for the Momento-protocol server: one per session, reset before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from polycache.backends.momento import MomentoBackend
from tests.stand_ins.momento_server import MomentoStandIn

TEST_CACHE = "polycache-test"


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
