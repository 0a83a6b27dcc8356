"""One botocore client per service per process, shared by every loop and thread; lazy imports."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any

import pytest

from polycache import Cache
from polycache.loaders import _aws
from tests.stand_ins.moto_server import CountingMotoServer

pytestmark = pytest.mark.moto


async def test_one_client_per_service_on_a_loop(aws: CountingMotoServer) -> None:
    ssm = await _aws.client("ssm")
    again, *concurrent = await asyncio.gather(*(_aws.client("ssm") for _ in range(5)))

    assert again is ssm
    assert all(client is ssm for client in concurrent)
    assert await _aws.client("dynamodb") is not ssm
    config = ssm.meta.config
    assert config.retries["mode"] == "standard"
    assert config.connect_timeout == _aws.CONNECT_TIMEOUT
    assert config.read_timeout == _aws.READ_TIMEOUT
    assert config.max_pool_connections == _aws.MAX_CONCURRENCY
    assert ssm.meta.endpoint_url == aws.url
    assert ssm.exceptions.ParameterNotFound.__name__ == "ParameterNotFound"


def test_every_loop_shares_one_client(aws: CountingMotoServer, boto: Any) -> None:
    boto("ssm").put_parameter(Name="/loop/test", Value="v", Type="String")
    cache = Cache(ttl=0)  # every get loads: each asyncio.run reaches AWS
    clients: list[Any] = []

    async def invocation() -> Any:
        clients.append(await _aws.client("ssm"))
        return await cache.get("ssm:/loop/test")

    # asyncio.run per invocation, as most Lambda code does: the client is bound to no loop.
    assert asyncio.run(invocation()) == "v"
    assert asyncio.run(invocation()) == "v"

    assert clients[0] is clients[1]
    assert aws.count("ssm.GetParameter") == 2

    async def close() -> None:
        await _aws.close_clients()

    asyncio.run(close())


async def test_close_clients_makes_new_ones(aws: CountingMotoServer) -> None:
    first = await _aws.client("ssm")
    await _aws.close_clients()
    assert await _aws.client("ssm") is not first


async def test_calls_run_off_the_event_loop(aws: CountingMotoServer, boto: Any) -> None:
    boto("ssm").put_parameter(Name="/thread/test", Value="v", Type="String")
    ssm = await _aws.client("ssm")
    threads: list[str] = []
    ticks = 0

    def record(**kwargs: Any) -> None:
        threads.append(threading.current_thread().name)

    ssm.meta.events.register("before-call.ssm.GetParameter", record)

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    try:
        responses = await asyncio.gather(
            *(ssm.get_parameter(Name="/thread/test") for _ in range(4))
        )
    finally:
        ticker.cancel()
    assert [response["Parameter"]["Value"] for response in responses] == ["v"] * 4
    assert threads and all(name.startswith("polycache-aws") for name in threads)
    assert ticks > 4  # the loop went on while the calls were in flight


async def test_an_injected_session_is_used(aws: CountingMotoServer) -> None:
    import botocore.session

    made: list[str] = []

    class RecordingSession(botocore.session.Session):
        def create_client(  # type: ignore[override]  # records, then defers to botocore
            self, service: str, *arguments: Any, **keywords: Any
        ) -> Any:
            made.append(service)
            return super().create_client(service, *arguments, **keywords)

    _aws.use_session(RecordingSession())
    try:
        await _aws.client("secretsmanager")
        assert made == ["secretsmanager"]
    finally:
        await _aws.close_clients()
        _aws.use_session(None)


def test_importing_the_loaders_does_not_import_the_aws_sdk() -> None:
    code = (
        "import sys, polycache, polycache.loaders.ssm, polycache.loaders.s3, "
        "polycache.loaders.secretsmanager, polycache.loaders.dynamodb, polycache._inject\n"
        "sdk = ('aioboto3', 'aiobotocore', 'botocore', 'boto3')\n"
        "heavy = [name for name in sdk if name in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_endpoint_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETSMANAGER", "http://127.0.0.1:2")
    assert _aws._endpoint_url("ssm") == "http://127.0.0.1:1"
    assert _aws._endpoint_url("secretsmanager") == "http://127.0.0.1:2"
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert _aws._endpoint_url("ssm") is None
