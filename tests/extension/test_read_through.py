"""The read-through endpoints of the real extension process, against moto."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest

from tests.stand_ins.extension_process import ExtensionProcess
from tests.stand_ins.moto_server import CountingMotoServer

pytestmark = [pytest.mark.extension, pytest.mark.moto]

# The answers of the AWS Parameters and Secrets Lambda Extension, as its documentation records
# them: GetParameter's and GetSecretValue's output with ResultMetadata, times in RFC 3339.
RECORDED_PARAMETER = {
    "Parameter": {
        "ARN": str,
        "DataType": str,
        "LastModifiedDate": str,
        "Name": str,
        "Selector": type(None),
        "SourceResult": type(None),
        "Type": str,
        "Value": str,
        "Version": int,
    },
    "ResultMetadata": dict,
}
RECORDED_SECRET = {
    "ARN": str,
    "CreatedDate": str,
    "Name": str,
    "SecretBinary": type(None),
    "SecretString": str,
    "VersionId": str,
    "VersionStages": list,
    "ResultMetadata": dict,
}


def _shape(document: Any, recorded: dict[str, Any]) -> None:
    assert set(document) == set(recorded)
    for name, expected in recorded.items():
        if isinstance(expected, dict):
            _shape(document[name], expected)
        else:
            assert isinstance(document[name], expected), name


def _client(aws: CountingMotoServer, service: str) -> Any:
    return boto3.client(service, endpoint_url=aws.url, region_name="us-east-1")


def _get(process: ExtensionProcess, path: str) -> tuple[int, Any]:
    status, body = process.request("GET", path)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def test_1000_concurrent_requests_for_a_missing_parameter_reach_moto_once(
    aws: CountingMotoServer, extension_process: ExtensionProcess
) -> None:
    name = f"/missing/{uuid.uuid4()}"
    url = f"{extension_process.url}/systemsmanager/parameters/get?name={name}"
    headers = {"X-Aws-Parameters-Secrets-Token": extension_process.token or ""}

    async def storm() -> list[int]:
        # Under the extension's connection cap (POLYCACHE_EXTENSION_MAX_CONNECTIONS): at the
        # cap it closes the oldest idle connection, which a storm of 1000 would trip.
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> int:
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    return response.status

            return await asyncio.gather(*(one() for _ in range(1000)))

    aws.clear_calls()
    statuses = asyncio.run(storm())
    assert statuses == [404] * 1000
    assert aws.count("ssm.GetParameter") == 1
    # Remembered for the negative TTL: no more calls.
    assert _get(extension_process, f"/systemsmanager/parameters/get?name={name}")[0] == 404
    assert aws.count("ssm.GetParameter") == 1


def test_systemsmanager_answers_like_getparameter(
    aws: CountingMotoServer, extension_process: ExtensionProcess
) -> None:
    ssm = _client(aws, "ssm")
    name = f"/app/{uuid.uuid4()}/db-url"
    ssm.put_parameter(Name=name, Value="postgres://db", Type="SecureString")
    direct = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
    status, document = _get(
        extension_process, f"/systemsmanager/parameters/get?name={name}&withDecryption=true"
    )
    assert status == 200
    _shape(document, RECORDED_PARAMETER)
    parameter = document["Parameter"]
    assert parameter["Value"] == "postgres://db"
    assert parameter["Type"] == "SecureString"
    assert (parameter["Name"], parameter["Version"], parameter["ARN"]) == (
        direct["Name"],
        direct["Version"],
        direct["ARN"],
    )
    assert parameter["LastModifiedDate"].endswith("Z")
    ssm.put_parameter(Name=name, Value="postgres://other", Type="SecureString", Overwrite=True)
    status, version_one = _get(
        extension_process,
        f"/systemsmanager/parameters/get?name={name}&version=1&withDecryption=true",
    )
    assert version_one["Parameter"]["Value"] == "postgres://db"
    calls = aws.count("ssm.GetParameter")
    _get(extension_process, f"/systemsmanager/parameters/get?name={name}&withDecryption=true")
    assert aws.count("ssm.GetParameter") == calls


def test_secretsmanager_answers_like_getsecretvalue(
    aws: CountingMotoServer, extension_process: ExtensionProcess
) -> None:
    secrets = _client(aws, "secretsmanager")
    name = f"prod/{uuid.uuid4()}"
    secrets.create_secret(Name=name, SecretString='{"password":"hunter2"}')
    direct = secrets.get_secret_value(SecretId=name)
    status, document = _get(extension_process, f"/secretsmanager/get?secretId={name}")
    assert status == 200
    _shape(document, RECORDED_SECRET)
    assert document["SecretString"] == '{"password":"hunter2"}'
    assert document["VersionId"] == direct["VersionId"]
    assert document["VersionStages"] == ["AWSCURRENT"]
    assert document["ARN"] == direct["ARN"]
    status, error = _get(extension_process, f"/secretsmanager/get?secretId={name}-nope")
    assert (status, error["error"]) == (404, "not_found")
    assert "hunter2" not in extension_process.log()


def test_the_token_is_checked(extension_process: ExtensionProcess) -> None:
    status, body = extension_process.request(
        "GET", "/health", headers={"X-Aws-Parameters-Secrets-Token": "wrong"}
    )
    assert status == 403
    assert json.loads(body)["error"] == "token"


def test_sample_endpoints_prefetch_config_yaml(aws: CountingMotoServer, tmp_path: Path) -> None:
    _client(aws, "ssm").put_parameter(Name="Parameter1", Value="value one", Type="String")
    dynamodb = _client(aws, "dynamodb")
    dynamodb.create_table(
        TableName="DynamoDbTable",
        KeySchema=[
            {"AttributeName": "pKey", "KeyType": "HASH"},
            {"AttributeName": "sKey", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pKey", "AttributeType": "S"},
            {"AttributeName": "sKey", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(
        TableName="DynamoDbTable",
        Item={"pKey": {"S": "pKey1"}, "sKey": {"S": "sKey1"}, "data": {"S": "cached"}},
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        "parameters:\n  region: us-east-1\n  names:\n    - Parameter1\n"
        "dynamodb:\n  - region: us-east-1\n    table: DynamoDbTable\n"
        "    hashkey: pKey\n    hashkeytype: S\n    hashkeyvalue: pKey1\n"
        "    sortkey: sKey\n    sortkeytype: S\n    sortkeyvalue: sKey1\n"
    )
    aws.clear_calls()
    environment = {
        **aws.environment(),
        "POLYCACHE_EXTENSION_CONFIG": str(config),
        "CACHE_EXTENSION_TTL": "5m",
    }
    with ExtensionProcess(environment) as process:
        # It serves while it prefetches; under Lambda, prefetching ends before the first invoke.
        deadline = time.monotonic() + 30  # generous: a loaded CI machine starts slowly
        while not (process.health() or {}).get("prefetched"):
            assert time.monotonic() < deadline, process.log()
            time.sleep(0.02)
        assert aws.count("ssm.GetParameter") == 1
        assert aws.count("dynamodb.GetItem") == 1
        assert _get(process, "/parameters?name=Parameter1") == (200, "value one")
        status, item = _get(process, "/dynamodb?name=DynamoDbTable-pKey1-sKey1")
        assert status == 200
        assert item == {"pKey": "pKey1", "sKey": "sKey1", "data": "cached"}
        assert aws.count() == 2
        assert _get(process, "/dynamodb?name=DynamoDbTable-pKey2")[0] == 404
