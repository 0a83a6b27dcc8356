"""inject: values resolved before the handler runs, for sync and async handlers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

import polycache
from polycache import Cache, ConfigurationError, LoaderError
from polycache._inject import _default_name, inject
from tests.stand_ins.moto_server import CountingMotoServer


@pytest.fixture
def parameters(aws: CountingMotoServer, boto: Any) -> CountingMotoServer:
    boto("ssm").put_parameter(Name="/prod/db/url", Value="postgres://db", Type="String")
    boto("ssm").put_parameter(Name="/prod/api/key", Value="k-123", Type="SecureString")
    boto("secretsmanager").create_secret(Name="prod/creds", SecretString="user:pw")
    aws.clear_calls()
    return aws


@pytest.mark.moto
def test_a_sync_handler_gets_keyword_arguments(parameters: CountingMotoServer) -> None:
    cache = Cache(ttl=60)
    seen: list[tuple[str, str, str]] = []

    @inject(cache, "ssm:/prod/db/url", "ssm:/prod/api/key", creds="secretsmanager:prod/creds")
    def handler(event: dict[str, Any], context: Any, url: str, key: str, creds: str) -> int:
        seen.append((url, key, creds))
        return int(event["n"])

    assert [handler({"n": n}, None) for n in range(3)] == [0, 1, 2]
    assert seen == [("postgres://db", "k-123", "user:pw")] * 3
    assert handler.__name__ == "handler"
    # Two SSM names in one GetParameters call, one secret: then nothing more.
    assert parameters.counts() == {"ssm.GetParameters": 1, "secretsmanager.GetSecretValue": 1}


@pytest.mark.moto
async def test_an_async_handler_gets_keyword_arguments(parameters: CountingMotoServer) -> None:
    cache = Cache(ttl=60)

    @inject(cache, db="ssm:/prod/db/url")
    async def handler(event: Any, context: Any, db: str) -> str:
        await asyncio.sleep(0)
        return db

    assert asyncio.iscoroutinefunction(handler)
    assert await handler({}, None) == "postgres://db"
    # The typed signature hides the injected parameter; a caller may still pass it.
    given = await handler({}, None, db="given by the caller")  # type: ignore[call-arg]
    assert given == "given by the caller"
    assert parameters.count() == 1


@pytest.mark.moto
def test_context_attributes_under_lambda_handler(parameters: CountingMotoServer) -> None:
    cache = Cache(ttl=60)

    @polycache.lambda_handler
    @inject(cache, "ssm:/prod/db/url", "ssm:/missing/name", into="context")
    async def handler(event: Any, context: Any) -> tuple[str, Any]:
        return context.url, context.name

    context = SimpleNamespace(aws_request_id="1")
    assert handler({}, context) == ("postgres://db", None)
    assert handler({}, SimpleNamespace()) == ("postgres://db", None)
    assert parameters.count() == 1


@pytest.mark.moto
def test_inject_over_lambda_handler(parameters: CountingMotoServer) -> None:
    cache = Cache(ttl=60)

    @inject(cache, "ssm:/prod/db/url", into="context")
    @polycache.lambda_handler
    async def handler(event: Any, context: Any) -> str:
        return str(context.url)

    assert handler({}, SimpleNamespace()) == "postgres://db"
    assert handler({}, SimpleNamespace()) == "postgres://db"
    assert parameters.count() == 1
    # lambda_handler's entry point passes keyword arguments through to the handler.

    @inject(cache, "ssm:/prod/db/url")
    @polycache.lambda_handler
    async def keyword_handler(event: Any, context: Any, url: str) -> str:
        return url

    assert keyword_handler({}, SimpleNamespace()) == "postgres://db"
    assert parameters.count() == 1


async def test_a_failed_load_stops_the_handler() -> None:
    cache = Cache(ttl=60)
    ran: list[bool] = []

    @cache.loader("broken")
    async def broken(name: str) -> str:
        raise LoaderError(f"broken:{name} failed", key=f"broken:{name}")

    @inject(cache, value="broken:x")
    async def handler(event: Any, context: Any, value: str) -> None:
        ran.append(True)

    with pytest.raises(LoaderError, match="broken:x"):
        await handler({}, None)
    assert ran == []


async def test_a_sync_handler_inside_a_running_loop_is_refused() -> None:
    cache = Cache(ttl=60)

    @inject(cache, value="plain-key")
    def handler(event: Any, context: Any, value: Any) -> Any:
        return value

    with pytest.raises(ConfigurationError, match="inside a running event loop"):
        handler({}, None)


def test_plain_keys_and_a_context_that_takes_no_attributes() -> None:
    cache = Cache(ttl=60)

    @inject(cache, "greeting", into="context")
    def handler(event: Any, context: Any) -> Any:
        return context.greeting

    with pytest.raises(ConfigurationError, match="takes attributes"):
        handler({}, object())


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("ssm:/prod/db/url", "url"),
        ("ssm:/prod/db/url:3", "url"),
        ("ssm:/app/prod/", "prod"),
        ("secretsmanager:prod/db-creds", "db_creds"),
        ("s3://bucket/conf/app.json", "app_json"),
        ("dynamodb://users?id=42", "users"),
        ("plain", "plain"),
        ("ssm:/x/2024", "_2024"),
    ],
)
def test_default_names(key: str, name: str) -> None:
    assert _default_name(key) == name


def test_bad_uses_are_named() -> None:
    cache = Cache(ttl=60)
    with pytest.raises(ConfigurationError, match="both be named 'url'"):
        inject(cache, "ssm:/a/url", "ssm:/b/url")
    with pytest.raises(ConfigurationError, match="at least one"):
        inject(cache)
    with pytest.raises(ConfigurationError, match="into"):
        inject(cache, "k", into="env")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"polycache\.Cache"):
        inject("not a cache", "k")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"\['url'\]"):

        @inject(cache, "ssm:/a/url")
        def handler(event: Any, context: Any) -> None: ...
