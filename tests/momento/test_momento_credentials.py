"""Momento credentials: environment variables, Secrets Manager (through moto), and their errors."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from polycache import BackendError, Cache, ConfigurationError, SourceNotFound
from polycache.backends import _secrets
from polycache.backends._momento_credentials import (
    EnvironmentCredentials,
    NoCredentials,
    SecretCredentials,
    credentials_from_environment,
    parse_secret,
)
from polycache.backends.momento import MomentoBackend
from tests.momento.helpers import RecordingFactory, fake_api_key
from tests.stand_ins.momento_fixtures import TEST_CACHE
from tests.stand_ins.momento_server import MomentoStandIn
from tests.stand_ins.moto_server import CountingMotoServer

KEY = fake_api_key("credentials")
ENDPOINT = "cell-test-1.example.invalid"


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    _secrets.forget_read_secrets()
    yield
    _secrets.forget_read_secrets()


# -- the environment ---------------------------------------------------------------------------


def test_no_variables_means_no_key() -> None:
    assert isinstance(credentials_from_environment({}), NoCredentials)


async def test_api_key_and_endpoint() -> None:
    source = credentials_from_environment({"MOMENTO_API_KEY": KEY, "MOMENTO_ENDPOINT": ENDPOINT})
    assert isinstance(source, EnvironmentCredentials)
    credentials = await source()
    assert credentials is not None
    assert (credentials.api_key, credentials.endpoint) == (KEY, ENDPOINT)
    assert KEY not in repr(source) and KEY not in repr(credentials)


def test_the_secret_variable_wins() -> None:
    source = credentials_from_environment(
        {"MOMENTO_API_KEY": KEY, "POLYCACHE_MOMENTO_API_KEY_SECRET": "prod/momento"}
    )
    assert isinstance(source, SecretCredentials)
    assert source.secret_name == "prod/momento"


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"MOMENTO_API_KEY": ""}, "MOMENTO_API_KEY"),
        ({"MOMENTO_API_KEY": "not-a-key"}, "MOMENTO_API_KEY"),
        ({"MOMENTO_API_KEY": "a.b"}, "MOMENTO_API_KEY"),
        ({"MOMENTO_API_KEY": "a.!!!.c"}, "MOMENTO_API_KEY"),
        ({"MOMENTO_API_KEY": KEY + " x"}, "MOMENTO_API_KEY"),
        ({"MOMENTO_API_KEY": KEY, "MOMENTO_ENDPOINT": " "}, "MOMENTO_ENDPOINT"),
        ({"POLYCACHE_MOMENTO_API_KEY_SECRET": ""}, "POLYCACHE_MOMENTO_API_KEY_SECRET"),
    ],
)
def test_malformed_variables_are_named(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable) as caught:
        credentials_from_environment(environ)
    value = environ[variable]
    if len(value) > 5:
        assert value not in str(caught.value)


def test_a_key_without_its_endpoint_names_momento_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTO_API_KEY", KEY)
    with pytest.raises(ConfigurationError, match="set MOMENTO_ENDPOINT") as caught:
        Cache("momento://sessions")
    assert KEY not in str(caught.value)


async def test_hosted_momento_uses_the_v2_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTO_API_KEY", KEY)
    monkeypatch.setenv("MOMENTO_ENDPOINT", ENDPOINT)
    factory = RecordingFactory()
    backend = MomentoBackend("sessions", client_factory=factory, request_timeout=0.05)
    # Built, but not connected: the lookup of the invalid host fails or times out.
    with pytest.raises(BackendError):
        await backend.get("k")
    provider = factory.built[0][1]
    assert provider.cache_endpoint == f"cache.{ENDPOINT}"
    assert provider.control_endpoint == f"control.{ENDPOINT}"
    assert provider.port == 443
    assert provider.auth_token == KEY
    await backend.aclose()


async def test_a_key_the_sdk_rejects_is_a_configuration_error() -> None:
    legacy = fake_api_key().replace(".", "x", 0)
    header, _, signature = legacy.split(".")
    import base64

    claims = base64.urlsafe_b64encode(json.dumps({"sub": "x"}).encode()).rstrip(b"=").decode()
    not_v2 = f"{header}.{claims}.{signature}"
    backend = MomentoBackend(
        "sessions",
        environ={"MOMENTO_API_KEY": not_v2, "MOMENTO_ENDPOINT": ENDPOINT},
        client_factory=RecordingFactory(),
    )
    with pytest.raises(ConfigurationError, match="MOMENTO_API_KEY does not hold a Momento v2"):
        await backend.get("k")


# -- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        KEY,
        f"  {KEY}\n",
        json.dumps({"MOMENTO_API_KEY": KEY}),
        json.dumps({"MOMENTO_AUTH_TOKEN": KEY, "MOMENTO_ENDPOINT": ENDPOINT}),
    ],
)
def test_secret_shapes(secret: str) -> None:
    credentials = parse_secret(secret, secret_name="prod/momento", endpoint=ENDPOINT)
    assert credentials.api_key == KEY
    assert credentials.endpoint == ENDPOINT
    assert "prod/momento" in credentials.source


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "is empty"),
        ("{not json " + KEY, "not valid JSON"),
        (json.dumps([KEY]), "JSON object"),
        (json.dumps({"api_key": KEY}), "MOMENTO_API_KEY or MOMENTO_AUTH_TOKEN"),
        (json.dumps({"MOMENTO_API_KEY": 42}), "MOMENTO_API_KEY or MOMENTO_AUTH_TOKEN"),
        (json.dumps({"MOMENTO_API_KEY": KEY, "MOMENTO_ENDPOINT": 1}), "MOMENTO_ENDPOINT"),
        ("plain-words-not-a-key", "does not hold a Momento API key"),
    ],
)
def test_malformed_secrets_never_show_their_contents(secret: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_secret(secret, secret_name="prod/momento", endpoint=None)
    assert "POLYCACHE_MOMENTO_API_KEY_SECRET" in str(caught.value)
    assert "prod/momento" in str(caught.value)
    assert KEY not in str(caught.value)
    assert caught.value.__cause__ is None or KEY not in repr(caught.value.__cause__)
    assert caught.value.__context__ is None or caught.value.__suppress_context__


async def test_secret_read_once_per_process_with_an_injected_fetch() -> None:
    reads: list[str] = []

    async def fetch(name: str) -> str:
        reads.append(name)
        return json.dumps({"MOMENTO_API_KEY": KEY})

    first = SecretCredentials("prod/momento", endpoint=ENDPOINT, fetch=fetch)
    second = SecretCredentials("prod/momento", endpoint=ENDPOINT, fetch=fetch)
    for source in (first, second, first):
        credentials = await source()
        assert credentials is not None and credentials.api_key == KEY
    assert reads == ["prod/momento"]


async def test_a_malformed_secret_is_read_again_once_fixed() -> None:
    stored = ["not-a-key"]
    reads = 0

    async def fetch(name: str) -> str:
        nonlocal reads
        reads += 1
        return stored[0]

    source = SecretCredentials("prod/momento", fetch=fetch)
    with pytest.raises(ConfigurationError, match="does not hold a Momento API key"):
        await source()
    stored[0] = KEY
    credentials = await source()
    assert credentials is not None and credentials.api_key == KEY
    assert await source() == credentials
    assert reads == 2


async def test_secret_errors_are_translated() -> None:
    async def missing(name: str) -> str:
        raise SourceNotFound("no such secret")

    async def broken(name: str) -> str:
        raise OSError("network down")

    with pytest.raises(ConfigurationError, match="does not exist"):
        await SecretCredentials("gone", fetch=missing)()
    with pytest.raises(BackendError, match="OSError") as caught:
        await SecretCredentials("flaky", fetch=broken)()
    assert isinstance(caught.value.__cause__, OSError)


async def test_a_slow_first_read_finishes_after_the_caller_gives_up(
    momento: MomentoStandIn,
) -> None:
    import asyncio

    reads = 0

    async def slow(name: str) -> str:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.3)
        return KEY

    backend = MomentoBackend(
        TEST_CACHE,
        endpoint=("127.0.0.1", momento.port),
        credentials=SecretCredentials("prod/momento", fetch=slow),
    )
    cache = Cache(backend, backend_timeout=0.1)
    assert await cache.get("k") is None  # timed out: fails open
    assert cache.stats.backend_errors == 1
    await asyncio.sleep(0.35)
    await cache.set("k", "v")
    assert await cache.get("k") == "v"
    assert reads == 1
    await cache.aclose()


# -- secrets through moto's Secrets Manager, against the stand-in --------------------------------


@pytest.fixture
async def secrets(aws: CountingMotoServer) -> AsyncIterator[Any]:
    import boto3

    client = boto3.client("secretsmanager", endpoint_url=aws.url)
    yield client
    from polycache.loaders import _aws

    await _aws.close_clients()


@pytest.mark.moto
@pytest.mark.momento
@pytest.mark.parametrize("shape", ["plain", "json"])
async def test_key_from_secrets_manager(
    shape: str,
    secrets: Any,
    aws: CountingMotoServer,
    momento: MomentoStandIn,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = fake_api_key(f"from-secrets-manager-{shape}")
    secret = key if shape == "plain" else json.dumps({"MOMENTO_API_KEY": key})
    secrets.create_secret(Name="prod/momento", SecretString=secret)
    momento.require_api_key(key)
    monkeypatch.setenv("POLYCACHE_MOMENTO_API_KEY_SECRET", "prod/momento")
    aws.clear_calls()

    # moto's first call to a service takes about a second: more than the default timeout.
    writer = Cache(momento.url(TEST_CACHE), fail_open=False, backend_timeout=10)
    reader = Cache(momento.url(TEST_CACHE), fail_open=False, backend_timeout=10)
    await writer.set("k", "shared")
    assert await reader.get("k") == "shared"
    assert aws.count("secretsmanager.GetSecretValue") == 1  # once per process
    assert key not in repr(writer)
    # botocore's own DEBUG lines print response bodies (secrets included): not ours to police.
    ours = [
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(("botocore", "aiobotocore", "urllib3"))
    ]
    assert ours and not any(key in message for message in ours)
    await writer.aclose()
    await reader.aclose()


@pytest.mark.moto
@pytest.mark.momento
async def test_missing_secret_is_a_configuration_error(
    secrets: Any, momento: MomentoStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYCACHE_MOMENTO_API_KEY_SECRET", "no/such/secret")
    backend = MomentoBackend.from_url(momento.url(TEST_CACHE))
    with pytest.raises(ConfigurationError, match=r"no/such/secret.*does not exist"):
        await backend.get("k")
    assert momento.count() == 0
