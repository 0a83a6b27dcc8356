"""Fixtures for the AWS loader tests: seeding moto with boto3, and clients closed per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError

from polycache.loaders import _aws
from tests.stand_ins.moto_server import AWS_TEST_ENVIRONMENT, CountingMotoServer

if TYPE_CHECKING:
    from botocore.exceptions import _ResponseMetadataTypeDef as ResponseMetadataTypeDef


@pytest.fixture(scope="session")
def boto(moto_server: CountingMotoServer) -> Callable[[str], Any]:
    """Sync boto3 clients for seeding the moto server, made once per service."""
    session = boto3.Session(
        aws_access_key_id=AWS_TEST_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_TEST_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=AWS_TEST_ENVIRONMENT["AWS_SESSION_TOKEN"],
        region_name=AWS_TEST_ENVIRONMENT["AWS_REGION"],
    )
    clients: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in clients:
            clients[service] = session.client(service, endpoint_url=moto_server.url)
        return clients[service]

    return client


@pytest.fixture(autouse=True)
async def _close_aws_clients() -> AsyncIterator[None]:
    """Each test's loop gets its own clients; close them with it instead of leaking sessions."""
    yield
    await _aws.close_clients()


def response_metadata(status: int) -> ResponseMetadataTypeDef:
    """The `ResponseMetadata` of an AWS answer with HTTP status `status`."""
    return {
        "RequestId": "",
        "HostId": "",
        "HTTPStatusCode": status,
        "HTTPHeaders": {},
        "RetryAttempts": 0,
    }


def client_error(code: str, operation: str, status: int = 400) -> ClientError:
    """A botocore ClientError as aiobotocore raises it."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"simulated {code}"},
            "ResponseMetadata": response_metadata(status),
        },
        operation,
    )


class FailingClient:
    """An injectable client whose every AWS operation raises the given error."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        async def call(**arguments: Any) -> Any:
            self.calls.append((operation, arguments))
            raise self.error

        return call


def clients_returning(client: Any) -> Callable[[str], Any]:
    """A `clients=` factory handing out `client` for every service."""

    async def clients(service: str) -> Any:
        await asyncio.sleep(0)
        return client

    return clients


async def wait_until(condition: Callable[[], bool]) -> None:
    """Let background work run until `condition` holds (five seconds at most)."""
    async with asyncio.timeout(5):
        # Polling: the condition is on a server in another thread, with no event to wait for.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
