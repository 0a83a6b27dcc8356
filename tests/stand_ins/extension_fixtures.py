"""pytest fixtures for the extension process: one per session, emptied before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from polycache.backends.extension import ExtensionBackend
from tests.stand_ins.extension_process import ExtensionProcess
from tests.stand_ins.moto_server import CountingMotoServer


@pytest.fixture(scope="session")
def extension_process(moto_server: CountingMotoServer) -> Iterator[ExtensionProcess]:
    """The extension, its AWS sources pointed at the session's moto server.

    Its token is moto's `AWS_SESSION_TOKEN` ("testing"), so every request must carry it.
    """
    process = ExtensionProcess(
        {**moto_server.environment(), "POLYCACHE_EXTENSION_NEGATIVE_TTL": "30"}
    ).start()
    yield process
    process.close()


@pytest.fixture
async def extension_backend(extension_process: ExtensionProcess) -> AsyncIterator[ExtensionBackend]:
    """A backend on the session's extension, whose key/value store was just emptied."""
    extension_process.clear()
    backend = ExtensionBackend(port=extension_process.port, token=extension_process.token)
    yield backend
    await backend.aclose()
