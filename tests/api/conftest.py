"""The environment's event loop, closed after each test so that no test sees another's tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from polycache._lambda import _environment_loop


@pytest.fixture
def environment_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The loop `lambda_handler` and `cache.sync` run on; a fresh one after this test."""
    loop = _environment_loop()
    yield loop
    if not loop.is_running():
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()  # the next _environment_loop() makes a new one
