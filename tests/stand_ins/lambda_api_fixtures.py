"""pytest fixtures for the Lambda APIs: cargo-lambda per session, the SHUTDOWN fake per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.stand_ins.lambda_api import CargoLambdaApi, FakeExtensionsApi, cargo_lambda_missing


@pytest.fixture(scope="session")
def cargo_lambda() -> Iterator[CargoLambdaApi]:
    """cargo-lambda's Runtime and Extensions APIs; skipped only where cargo-lambda cannot run."""
    missing = cargo_lambda_missing()
    if missing is not None:
        pytest.skip(missing)
    api = CargoLambdaApi().start()
    yield api
    api.stop()


@pytest.fixture
def fresh_cargo_lambda() -> Iterator[CargoLambdaApi]:
    """A cargo-lambda of this test's own: no extension that another test registered (and then
    stopped) is waited for when this test invokes."""
    missing = cargo_lambda_missing()
    if missing is not None:
        pytest.skip(missing)
    api = CargoLambdaApi().start()
    yield api
    api.stop()


@pytest.fixture
async def fake_extensions_api() -> AsyncIterator[FakeExtensionsApi]:
    """An Extensions API that sends the INVOKE and SHUTDOWN events a test queues."""
    api = await FakeExtensionsApi().start()
    yield api
    await api.stop()
