"""The extension process: loopback only, registration, INVOKE, SHUTDOWN, init errors, signals."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.stand_ins.extension_process import HOST, ExtensionProcess
from tests.stand_ins.lambda_api import CargoLambdaApi, FakeExtensionsApi

pytestmark = pytest.mark.extension


async def until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not hold in time")
        await asyncio.sleep(0.02)


async def exited(process: ExtensionProcess, limit: float) -> int:
    await until(lambda: process.returncode is not None, limit)
    code = process.returncode
    assert code is not None
    return code


def _health(process: ExtensionProcess) -> dict[str, object]:
    health = process.health()
    assert health is not None
    return health


def test_serves_on_127_0_0_1_only(extension_process: ExtensionProcess) -> None:
    table = Path("/proc/net/tcp")
    if not table.exists():
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    listening = []
    for line in table.read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if state == "0A" and int(port, 16) == extension_process.port:
            listening.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    assert listening == ["127.0.0.1"]


def test_standalone_stops_on_sigterm() -> None:
    with ExtensionProcess({"AWS_SESSION_TOKEN": "t"}) as process:
        assert _health(process)["registered"] is False
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(2.0) == 0
        assert time.monotonic() - started < 2.0
        assert "standalone" in process.log()


@pytest.mark.lambda_api
async def test_registers_with_cargo_lambda_and_sees_invokes(cargo_lambda: CargoLambdaApi) -> None:
    process = ExtensionProcess(
        {"AWS_LAMBDA_RUNTIME_API": cargo_lambda.runtime_api, "AWS_SESSION_TOKEN": "t"}
    ).start(wait=False)
    try:
        await process.wait_ready_async()
        await until(lambda: _health(process)["registered"] is True)
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            for _ in range(5):
                # cargo-lambda drops an INVOKE the extension is not waiting for: allow a retry.
                await asyncio.sleep(0.2)
                invocation = asyncio.ensure_future(client.post(cargo_lambda.invoke_url, json={}))
                runtime = f"{cargo_lambda.runtime_api}/2018-06-01/runtime/invocation"
                event = await client.get(f"{runtime}/next")
                request_id = event.headers["lambda-runtime-aws-request-id"]
                answer = await client.post(f"{runtime}/{request_id}/response", json={"ok": True})
                assert answer.status_code == 200
                assert (await invocation).json() == {"ok": True}
                try:
                    await until(lambda: _health(process)["invokes"] == 1, 1.0)
                    break
                except TimeoutError:
                    continue
            assert _health(process)["invokes"] == 1
        # cargo-lambda never sends SHUTDOWN; SIGTERM stops the extension as cleanly.
        process.send_signal(signal.SIGTERM)
        assert await exited(process, 2.0) == 0
        assert "registered with Lambda" in process.log()
    finally:
        process.close()


@pytest.mark.lambda_api
async def test_shutdown_stops_within_two_seconds(fake_extensions_api: FakeExtensionsApi) -> None:
    process = ExtensionProcess(
        {
            "AWS_LAMBDA_RUNTIME_API": fake_extensions_api.runtime_api,
            "AWS_SESSION_TOKEN": "t",
            "POLYCACHE_EXTENSION_NAME": "polycache-extension",
        }
    ).start(wait=False)
    try:
        await asyncio.wait_for(fake_extensions_api.registered.wait(), 20)
        assert fake_extensions_api.registrations == [
            {"name": "polycache-extension", "events": ["INVOKE", "SHUTDOWN"]}
        ]
        await process.wait_ready_async()
        await asyncio.wait_for(fake_extensions_api.waiting.wait(), 5)
        fake_extensions_api.invoke()
        await until(lambda: _health(process)["invokes"] == 1)
        await asyncio.wait_for(fake_extensions_api.waiting.wait(), 5)
        started = time.monotonic()
        fake_extensions_api.shutdown()
        assert await exited(process, 2.0) == 0
        assert time.monotonic() - started < 2.0
        assert "SHUTDOWN (spindown)" in process.log()
    finally:
        process.close()


async def test_a_bad_setting_is_reported_as_an_init_error(
    fake_extensions_api: FakeExtensionsApi,
) -> None:
    process = ExtensionProcess(
        {
            "AWS_LAMBDA_RUNTIME_API": fake_extensions_api.runtime_api,
            "CACHE_EXTENSION_TTL": "five minutes",
        }
    ).start(wait=False)
    try:
        assert await exited(process, 20.0) == 1
        assert len(fake_extensions_api.registrations) == 1
        [error] = fake_extensions_api.errors
        assert error["path"].endswith("/init/error")
        assert error["type"] == "Extension.ConfigurationError"
        assert "CACHE_EXTENSION_TTL" in error["body"]["errorMessage"]
    finally:
        process.close()


async def test_a_taken_port_is_reported_as_an_init_error(
    fake_extensions_api: FakeExtensionsApi,
) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        process = ExtensionProcess(
            {"AWS_LAMBDA_RUNTIME_API": fake_extensions_api.runtime_api},
            port=taken.getsockname()[1],
        ).start(wait=False)
        try:
            assert await exited(process, 20.0) == 1
            [error] = fake_extensions_api.errors
            assert error["type"] == "Extension.BindError"
        finally:
            process.close()
