"""The extension's HTTP API in process, with fake AWS sources: routes, errors, security."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from polycache import LoaderError
from polycache.extension._app import create_app
from polycache.extension._settings import ExtensionSettings
from polycache.extension._sources import (
    DynamoDbItem,
    ReadThrough,
    SampleConfig,
    SourceRejected,
    SourceTimeout,
    load_sample_config,
)
from tests.extension.fakes import FakeSources

TOKEN = "session-token-for-tests"
AUTH = {"X-Aws-Parameters-Secrets-Token": TOKEN}
CONFIG = SampleConfig(
    parameters=("/app/one",),
    items=(
        DynamoDbItem(
            "DynamoDbTable-pKey1-sKey1",
            "DynamoDbTable",
            {"pKey": {"S": "pKey1"}, "sKey": {"S": "sKey1"}},
        ),
    ),
)


@pytest.fixture
def sources() -> FakeSources:
    fake = FakeSources()
    fake.parameters.update({"/app/one": "one", "/app/secure": "secure:hunter2"})
    fake.secrets.update({"prod/db": '{"user":"admin"}', "prod/binary": b"\x00\x01"})
    fake.items["DynamoDbTable-pKey1-sKey1"] = {
        "pKey": {"S": "pKey1"},
        "sKey": {"S": "sKey1"},
        "count": {"N": "42"},
        "flag": {"BOOL": True},
    }
    return fake


async def _client(
    sources: FakeSources, **overrides: Any
) -> tuple[TestClient[Any, Any], ReadThrough]:
    settings = ExtensionSettings(**{"token": TOKEN, "max_item_bytes": 1000, **overrides})
    reads = ReadThrough(settings, sources, CONFIG)
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings, reads)))
    await client.start_server()
    return client, reads


@pytest.fixture
async def client(sources: FakeSources) -> AsyncIterator[TestClient[Any, Any]]:
    test_client, reads = await _client(sources)
    yield test_client
    await test_client.close()
    await reads.aclose()


async def _json(response: Any) -> Any:
    return json.loads(await response.read())


# -- security ------------------------------------------------------------------------------------


async def test_health_answers_with_the_token(client: TestClient[Any, Any]) -> None:
    response = await client.get("/health", headers=AUTH)
    assert response.status == 200
    assert (await _json(response))["status"] == "ok"
    assert (await client.get("/ping", headers=AUTH)).status == 200


@pytest.mark.parametrize(
    "path",
    ["/health", "/v1/kv/k", "/parameters?name=/app/one", "/secretsmanager/get?secretId=prod/db"],
)
@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", ""])
async def test_a_missing_or_wrong_token_is_403(
    client: TestClient[Any, Any], path: str, token: str | None
) -> None:
    headers = {} if token is None else {"X-Aws-Parameters-Secrets-Token": token}
    response = await client.get(path, headers=headers)
    assert response.status == 403
    assert await _json(response) == {
        "error": "token",
        "message": "missing or wrong X-Aws-Parameters-Secrets-Token header",
    }


async def test_no_token_needed_without_a_session_token(sources: FakeSources) -> None:
    test_client, reads = await _client(sources, token=None)
    try:
        assert (await test_client.get("/health")).status == 200
    finally:
        await test_client.close()
        await reads.aclose()


async def test_forwarded_requests_are_refused(client: TestClient[Any, Any]) -> None:
    response = await client.get(
        "/parameters?name=/app/one", headers={**AUTH, "X-Forwarded-For": "203.0.113.9"}
    )
    assert response.status == 403
    assert (await _json(response))["error"] == "forwarded"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/health"),
        ("HEAD", "/health"),
        ("POST", "/v1/kv/k"),
        ("PATCH", "/v1/kv/k"),
        ("PUT", "/parameters?name=x"),
        ("DELETE", "/secretsmanager/get?secretId=x"),
        ("GET", "/v1/kv"),
    ],
)
async def test_other_methods_are_405(client: TestClient[Any, Any], method: str, path: str) -> None:
    response = await client.request(method, path, headers=AUTH)
    assert response.status == 405
    if method != "HEAD":
        assert (await _json(response))["error"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/", "/nope", "/v1", "/v1/kv/", "/parameters/x", "/admin"])
async def test_unknown_paths_are_404(client: TestClient[Any, Any], path: str) -> None:
    response = await client.get(path, headers=AUTH)
    assert response.status == 404
    assert (await _json(response))["error"] == "not_found"


# -- the key/value API -----------------------------------------------------------------------------


async def test_put_get_delete_carries_freshness(client: TestClient[Any, Any]) -> None:
    now = time.time()
    headers = {
        **AUTH,
        "X-Polycache-Fresh-Until": repr(now + 10),
        "X-Polycache-Stale-Until": repr(now + 20),
        "X-Polycache-Expires-At": repr(now + 30),
        "X-Polycache-Validator": "%22etag%E2%9C%93%22",
    }
    key = "/v1/kv/" + "s3%3A%2F%2Fbucket%2Fa%20b%3Fx%3D1"
    assert (await client.put(key, data=b"\x00value\xff", headers=headers)).status == 204
    response = await client.get(key, headers=AUTH)
    assert response.status == 200
    assert await response.read() == b"\x00value\xff"
    assert float(response.headers["X-Polycache-Fresh-Until"]) == pytest.approx(now + 10)
    assert float(response.headers["X-Polycache-Stale-Until"]) == pytest.approx(now + 20)
    assert float(response.headers["X-Polycache-Expires-At"]) == pytest.approx(now + 30)
    assert response.headers["X-Polycache-Validator"] == "%22etag%E2%9C%93%22"
    assert "X-Polycache-Negative" not in response.headers
    assert (await client.delete(key, headers=AUTH)).status == 204
    assert (await client.get(key, headers=AUTH)).status == 404
    assert (await client.delete(key, headers=AUTH)).status == 204


async def test_plain_put_with_a_ttl(client: TestClient[Any, Any]) -> None:
    assert (await client.put("/v1/kv/plain?ttl=0.2", data=b"v", headers=AUTH)).status == 204
    assert (await client.get("/v1/kv/plain", headers=AUTH)).status == 200
    await asyncio.sleep(0.3)
    response = await client.get("/v1/kv/plain", headers=AUTH)
    assert response.status == 404
    assert await _json(response) == {"error": "not_found", "message": "no such key"}


async def test_put_without_a_ttl_is_kept(client: TestClient[Any, Any]) -> None:
    assert (await client.put("/v1/kv/forever", data=b"v", headers=AUTH)).status == 204
    response = await client.get("/v1/kv/forever", headers=AUTH)
    assert response.headers["X-Polycache-Expires-At"] == "inf"


async def test_negative_entries_round_trip(client: TestClient[Any, Any]) -> None:
    headers = {**AUTH, "X-Polycache-Negative": "1"}
    await client.put("/v1/kv/absent?ttl=5", data=b"", headers=headers)
    response = await client.get("/v1/kv/absent", headers=AUTH)
    assert response.headers["X-Polycache-Negative"] == "1"


async def test_delete_all_empties_the_store(client: TestClient[Any, Any]) -> None:
    for index in range(3):
        await client.put(f"/v1/kv/k{index}?ttl=60", data=b"v", headers=AUTH)
    assert (await _json(await client.get("/health", headers=AUTH)))["entries"] == 3
    assert (await client.delete("/v1/kv", headers=AUTH)).status == 204
    assert (await _json(await client.get("/health", headers=AUTH)))["entries"] == 0


async def test_a_value_over_the_limit_is_413(client: TestClient[Any, Any]) -> None:
    assert (await client.put("/v1/kv/big?ttl=5", data=b"x" * 1000, headers=AUTH)).status == 204
    response = await client.put("/v1/kv/big?ttl=5", data=b"x" * 1001, headers=AUTH)
    assert response.status == 413
    assert await _json(response) == {
        "error": "too_large",
        "message": "a value may have at most 1000 bytes",
    }
    assert len(await (await client.get("/v1/kv/big", headers=AUTH)).read()) == 1000


async def test_a_streamed_value_over_the_limit_is_413(client: TestClient[Any, Any]) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(300):
            yield b"x" * 1000

    response = await client.put("/v1/kv/streamed?ttl=5", data=chunks(), headers=AUTH)
    assert response.status == 413


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/kv/k?ttl=soon", {}),
        ("/v1/kv/k?ttl=-1", {}),
        ("/v1/kv/k?ttl=1&ttl=2", {}),
        ("/v1/kv/k", {"X-Polycache-Expires-At": "tomorrow"}),
        ("/v1/kv/k", {"X-Polycache-Fresh-Until": "nan"}),
        ("/v1/kv/%FF%FE", {}),
    ],
)
async def test_malformed_puts_are_400(
    client: TestClient[Any, Any], path: str, headers: dict[str, str]
) -> None:
    response = await client.put(path, data=b"v", headers={**AUTH, **headers})
    assert response.status == 400
    assert (await _json(response))["error"] == "bad_request"


# -- the read-through endpoints ------------------------------------------------------------------


async def test_sample_parameters_endpoint(
    client: TestClient[Any, Any], sources: FakeSources
) -> None:
    response = await client.get("/parameters?name=/app/secure", headers=AUTH)
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert await response.text() == "secure:hunter2"
    await client.get("/parameters?name=/app/secure", headers=AUTH)
    assert sources.calls == [("parameter", "/app/secure")]


async def test_sample_dynamodb_endpoint(client: TestClient[Any, Any]) -> None:
    response = await client.get("/dynamodb?name=DynamoDbTable-pKey1-sKey1", headers=AUTH)
    assert response.status == 200
    assert await _json(response) == {
        "pKey": "pKey1",
        "sKey": "sKey1",
        "count": "42",
        "flag": True,
    }
    missing = await client.get("/dynamodb?name=Other-x", headers=AUTH)
    assert missing.status == 404
    assert (await _json(missing))["error"] == "not_found"


async def test_systemsmanager_endpoint_shape(client: TestClient[Any, Any]) -> None:
    response = await client.get(
        "/systemsmanager/parameters/get?name=/app/secure&withDecryption=true", headers=AUTH
    )
    assert response.status == 200
    document = await _json(response)
    assert document == {
        "Parameter": {
            "ARN": "arn:aws:ssm:us-east-1:123456789012:parameter/app/secure",
            "DataType": "text",
            "LastModifiedDate": "2026-01-02T03:04:05.678Z",
            "Name": "/app/secure",
            "Selector": None,
            "SourceResult": None,
            "Type": "SecureString",
            "Value": "secure:hunter2",
            "Version": 1,
        },
        "ResultMetadata": {},
    }
    encrypted = await client.get("/systemsmanager/parameters/get?name=/app/secure", headers=AUTH)
    assert (await _json(encrypted))["Parameter"]["Value"] == "ENCRYPTED"


async def test_systemsmanager_version_and_label(
    client: TestClient[Any, Any], sources: FakeSources
) -> None:
    sources.parameters["/app/one:3"] = "three"
    sources.parameters["/app/one:live"] = "live"
    path = "/systemsmanager/parameters/get?name=/app/one"
    three = await _json(await client.get(f"{path}&version=3", headers=AUTH))
    assert three["Parameter"]["Value"] == "three"
    live = await _json(await client.get(f"{path}&label=live", headers=AUTH))
    assert live["Parameter"]["Value"] == "live"
    both = await client.get(f"{path}&label=live&version=3", headers=AUTH)
    assert both.status == 400
    assert (await client.get(f"{path}&version=x", headers=AUTH)).status == 400
    assert (await client.get(f"{path}&withDecryption=maybe", headers=AUTH)).status == 400


async def test_secretsmanager_endpoint_shape(client: TestClient[Any, Any]) -> None:
    response = await client.get("/secretsmanager/get?secretId=prod/db", headers=AUTH)
    assert response.status == 200
    assert await _json(response) == {
        "ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf",
        "CreatedDate": "2026-01-02T03:04:05.678Z",
        "Name": "prod/db",
        "SecretBinary": None,
        "SecretString": '{"user":"admin"}',
        "VersionId": "11111111-2222-3333-4444-555555555555",
        "VersionStages": ["AWSCURRENT"],
        "ResultMetadata": {},
    }
    binary = await _json(await client.get("/secretsmanager/get?secretId=prod/binary", headers=AUTH))
    assert binary["SecretBinary"] == "AAE="
    assert binary["SecretString"] is None
    staged = await client.get(
        "/secretsmanager/get?secretId=prod/db&versionStage=AWSPREVIOUS", headers=AUTH
    )
    assert (await _json(staged))["VersionStages"] == ["AWSPREVIOUS"]


@pytest.mark.parametrize(
    "path",
    [
        "/parameters",
        "/parameters?name=",
        "/dynamodb",
        "/systemsmanager/parameters/get",
        "/systemsmanager/parameters/get?name=a&name=b",
        "/secretsmanager/get",
        "/secretsmanager/get?name=prod/db",
    ],
)
async def test_missing_query_parameters_are_400(client: TestClient[Any, Any], path: str) -> None:
    response = await client.get(path, headers=AUTH)
    assert response.status == 400
    assert (await _json(response))["error"] == "bad_request"


@pytest.mark.parametrize(
    "path",
    [
        "/parameters?name=/nope",
        "/systemsmanager/parameters/get?name=/nope",
        "/secretsmanager/get?secretId=nope",
    ],
)
async def test_not_found_is_404_and_remembered(
    client: TestClient[Any, Any], sources: FakeSources, path: str
) -> None:
    for _ in range(3):
        response = await client.get(path, headers=AUTH)
        assert response.status == 404
        assert (await _json(response))["error"] == "not_found"
    assert len(sources.calls) == 1


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (LoaderError("parameter /p: AWS error AccessDeniedException"), 502, "source_error"),
        (SourceTimeout("parameter /p: no answer within 5.0 s"), 504, "source_timeout"),
        (SourceRejected("parameter /p: AWS rejected the request"), 400, "bad_request"),
    ],
)
async def test_source_failures_are_told_apart(
    client: TestClient[Any, Any],
    sources: FakeSources,
    error: Exception,
    status: int,
    code: str,
) -> None:
    sources.parameters["/p"] = error
    response = await client.get("/systemsmanager/parameters/get?name=/p", headers=AUTH)
    assert response.status == status
    body = await _json(response)
    assert body["error"] == code
    assert set(body) == {"error", "message"}


async def test_concurrent_misses_load_once(sources: FakeSources) -> None:
    sources.delay = 0.1
    test_client, reads = await _client(sources)
    try:
        responses = await asyncio.gather(
            *(
                test_client.get("/secretsmanager/get?secretId=prod/db", headers=AUTH)
                for _ in range(200)
            )
        )
        assert {response.status for response in responses} == {200}
        assert sources.calls == [("secret", "prod/db")]
    finally:
        await test_client.close()
        await reads.aclose()


async def test_stale_answers_while_one_refresh_runs(sources: FakeSources) -> None:
    test_client, reads = await _client(sources, ssm_ttl=0.1, stale_ttl=60.0)
    path = "/systemsmanager/parameters/get?name=/app/one"
    try:
        await test_client.get(path, headers=AUTH)
        sources.parameters["/app/one"] = "two"
        await asyncio.sleep(0.15)
        stale = await _json(await test_client.get(path, headers=AUTH))
        assert stale["Parameter"]["Value"] == "one"
        await asyncio.sleep(0.05)
        fresh = await _json(await test_client.get(path, headers=AUTH))
        assert fresh["Parameter"]["Value"] == "two"
        assert len(sources.calls) == 2
    finally:
        await test_client.close()
        await reads.aclose()


async def test_a_ttl_of_zero_does_not_cache(sources: FakeSources) -> None:
    test_client, reads = await _client(sources, secrets_ttl=0.0)
    try:
        for _ in range(3):
            await test_client.get("/secretsmanager/get?secretId=prod/db", headers=AUTH)
        assert len(sources.calls) == 3
    finally:
        await test_client.close()
        await reads.aclose()


async def test_no_secret_value_in_the_log(
    sources: FakeSources, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    sources.secrets["broken"] = LoaderError("secret broken: AWS error InternalServiceError")
    test_client, reads = await _client(sources)
    try:
        await test_client.get("/secretsmanager/get?secretId=prod/db", headers=AUTH)
        await test_client.get("/parameters?name=/app/secure", headers=AUTH)
        await test_client.get("/secretsmanager/get?secretId=broken", headers=AUTH)
        await test_client.get("/health", headers={"X-Aws-Parameters-Secrets-Token": "guess"})
    finally:
        await test_client.close()
        await reads.aclose()
    assert "broken" in caplog.text
    for secret in ("hunter2", '"user":"admin"', TOKEN, "guess"):
        assert secret not in caplog.text


async def test_prefetch_loads_the_config_list(sources: FakeSources) -> None:
    reads = ReadThrough(ExtensionSettings(), sources, CONFIG)
    assert await reads.prefetch() == 0
    assert sorted(sources.calls) == [
        ("item", "DynamoDbTable-pKey1-sKey1"),
        ("parameter", "/app/one"),
    ]
    await reads.aclose()
    assert sources.closed


def test_sample_config_layout(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "parameters:\n"
        "  region: us-west-2\n"
        "  names:\n"
        "    - Parameter1\n"
        "dynamodb:\n"
        "  - region: us-west-2\n"
        "    table: DynamoDbTable\n"
        "    hashkey: pKey\n"
        "    hashkeytype: S\n"
        "    hashkeyvalue: pKey1\n"
        "    sortkey: sKey\n"
        "    sortkeytype: S\n"
        "    sortkeyvalue: sKey1\n"
        "  - table: Numbers\n"
        "    hashkey: id\n"
        "    hashkeytype: N\n"
        "    hashkeyvalue: 7\n"
    )
    config = load_sample_config(path)
    assert config.parameters == ("Parameter1",)
    assert config.items == (
        DynamoDbItem(
            "DynamoDbTable-pKey1-sKey1",
            "DynamoDbTable",
            {"pKey": {"S": "pKey1"}, "sKey": {"S": "sKey1"}},
        ),
        DynamoDbItem("Numbers-7", "Numbers", {"id": {"N": "7"}}),
    )
    assert load_sample_config(tmp_path / "missing.yaml") == SampleConfig()
