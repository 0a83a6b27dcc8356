"""The Redis password from Secrets Manager: its shapes, read once per process, never shown."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from polycache import BackendError, Cache, ConfigurationError, SourceNotFound
from polycache.backends import _redis_credentials
from polycache.backends._redis_credentials import (
    PasswordCredentials,
    SecretPasswordCredentials,
    parse_secret,
)
from tests.stand_ins.moto_server import CountingMotoServer
from tests.stand_ins.redis_fixtures import ACL_PASSWORD
from tests.stand_ins.redis_server import RedisServer

SECRET = "s3cr3t-Value-that-must-not-leak"


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    _redis_credentials.forget_fetched_secrets()
    yield
    _redis_credentials.forget_fetched_secrets()


@pytest.mark.parametrize(
    ("secret", "username", "expected"),
    [
        (SECRET, None, (None, SECRET)),
        (SECRET, "app", ("app", SECRET)),
        (f"  {SECRET} ", None, (None, f"  {SECRET} ")),  # a password may have spaces
        (json.dumps({"password": SECRET}), "app", ("app", SECRET)),
        (json.dumps({"password": SECRET, "username": "rotated"}), "app", ("rotated", SECRET)),
    ],
)
def test_secret_shapes(secret: str, username: str | None, expected: tuple[str | None, str]) -> None:
    credentials = parse_secret(secret, secret_name="prod/redis", username=username)
    assert (credentials.username, credentials.password) == expected
    assert SECRET not in repr(credentials)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("   ", "is empty"),
        ("{" + SECRET, "not valid JSON"),
        (json.dumps({"pass": SECRET}), "without a non-empty string field 'password'"),
        (json.dumps({"password": SECRET, "username": 7}), "'username' field"),
    ],
)
def test_malformed_secrets_never_show_their_contents(secret: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_secret(secret, secret_name="prod/redis", username=None)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None


def test_url_password_repr() -> None:
    assert SECRET not in repr(PasswordCredentials("u", SECRET))


def test_secret_is_read_once_per_process_across_event_loops() -> None:
    reads = 0

    async def fetch(name: str) -> str:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        return SECRET

    source = SecretPasswordCredentials("prod/redis", fetch=fetch)

    async def many() -> set[str]:
        results = await asyncio.gather(*(source() for _ in range(10)))
        return {credentials.password for credentials in results}

    assert asyncio.run(many()) == {SECRET}
    assert asyncio.run(many()) == {SECRET}
    other = SecretPasswordCredentials("prod/redis", fetch=fetch)
    assert asyncio.run(other()).password == SECRET
    assert reads == 1
    assert SECRET not in repr(source)


@pytest.mark.parametrize(
    ("error", "expected", "message"),
    [
        (SourceNotFound("gone"), ConfigurationError, "'prod/redis', which does not exist"),
        (RuntimeError(SECRET), BackendError, "failed: RuntimeError"),
    ],
)
async def test_secret_errors_are_translated(
    error: Exception, expected: type[Exception], message: str
) -> None:
    async def fetch(name: str) -> str:
        raise error

    with pytest.raises(expected, match=message) as caught:
        await SecretPasswordCredentials("prod/redis", fetch=fetch)()
    assert SECRET not in str(caught.value)


# -- through moto's Secrets Manager, against the ACL server -----------------------------------


@pytest.fixture
async def secrets(aws: CountingMotoServer) -> AsyncIterator[Any]:
    import boto3  # type: ignore[import-untyped]

    client = boto3.client("secretsmanager", endpoint_url=aws.url)
    yield client
    from polycache.loaders import _aws

    await _aws.close_clients()


@pytest.mark.moto
@pytest.mark.redis
@pytest.mark.parametrize("shape", ["plain", "json"])
async def test_password_from_secrets_manager(
    shape: str,
    secrets: Any,
    aws: CountingMotoServer,
    redis_acl_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    redis_acl_server.flush()
    if shape == "plain":
        secrets.create_secret(Name="prod/redis", SecretString=ACL_PASSWORD)
        url = f"redis://polycache@127.0.0.1:{redis_acl_server.port}"
    else:
        document = {"username": "polycache", "password": ACL_PASSWORD}
        secrets.create_secret(Name="prod/redis", SecretString=json.dumps(document))
        url = f"redis://127.0.0.1:{redis_acl_server.port}"
    monkeypatch.setenv("POLYCACHE_REDIS_PASSWORD_SECRET", "prod/redis")
    aws.clear_calls()

    # moto's first call to a service takes about a second: more than the default timeout.
    writer = Cache(url, fail_open=False, backend_timeout=10)
    reader = Cache(url, fail_open=False, backend_timeout=10)
    await writer.set("k", "shared")
    assert await reader.get("k") == "shared"
    assert aws.count("secretsmanager.GetSecretValue") == 1  # once per process
    assert ACL_PASSWORD not in repr(writer)
    ours = [
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(("botocore", "aiobotocore", "urllib3"))
    ]
    assert not any(ACL_PASSWORD in message for message in ours)
    await writer.aclose()
    await reader.aclose()


@pytest.mark.moto
@pytest.mark.redis
async def test_missing_secret_is_a_configuration_error(
    secrets: Any, redis_acl_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYCACHE_REDIS_PASSWORD_SECRET", "no/such/secret")
    cache = Cache(f"redis://polycache@127.0.0.1:{redis_acl_server.port}", backend_timeout=10)
    with pytest.raises(ConfigurationError, match=r"no/such/secret.*does not exist"):
        await cache.get("k")
    await cache.aclose()
