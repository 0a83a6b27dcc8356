"""pytest fixtures for the moto server: one per session, reset before each test that uses it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stand_ins.moto_server import CountingMotoServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator[CountingMotoServer]:
    server = CountingMotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: CountingMotoServer, monkeypatch: pytest.MonkeyPatch) -> CountingMotoServer:
    """A reset moto server, with the AWS variables pointing at it."""
    moto_server.reset()
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    return moto_server
