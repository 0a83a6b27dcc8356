"""Secrets Manager through the Cache, against moto."""

from __future__ import annotations

import json
from typing import Any

import pytest

from polycache import Cache, ConfigurationError, LoaderError
from polycache.loaders.secretsmanager import SecretsManagerLoader
from tests.conftest import FakeClock
from tests.loaders.conftest import FailingClient, client_error, clients_returning
from tests.stand_ins.moto_server import CountingMotoServer

pytestmark = pytest.mark.moto


async def test_string_binary_and_json_secrets(
    aws: CountingMotoServer, boto: Any, clock: FakeClock
) -> None:
    secrets = boto("secretsmanager")
    secrets.create_secret(Name="prod/db", SecretString=json.dumps({"user": "app", "port": 5432}))
    secrets.create_secret(Name="prod/key", SecretBinary=b"\x00\xffkey")
    aws.clear_calls()
    cache = Cache(ttl=60, clock=clock)
    cache.register_loader("creds", SecretsManagerLoader(transform="json"))

    assert await cache.get("secretsmanager:prod/db") == json.dumps({"user": "app", "port": 5432})
    assert await cache.get("secretsmanager:prod/key") == b"\x00\xffkey"
    assert await cache.get("creds:prod/db") == {"user": "app", "port": 5432}
    for _ in range(5):
        await cache.get("secretsmanager:prod/db")
    assert aws.count("secretsmanager.GetSecretValue") == 3


async def test_version_stages_and_ids(aws: CountingMotoServer, boto: Any) -> None:
    secrets = boto("secretsmanager")
    secrets.create_secret(Name="rotating", SecretString="one")
    second = secrets.put_secret_value(SecretId="rotating", SecretString="two")
    cache = Cache(ttl=60)
    cache.register_loader("previous", SecretsManagerLoader(version_stage="AWSPREVIOUS"))

    assert await cache.get("secretsmanager:rotating") == "two"
    assert await cache.get("secretsmanager:rotating?versionStage=AWSPREVIOUS") == "one"
    assert await cache.get(f"secretsmanager:rotating?versionId={second['VersionId']}") == "two"
    assert await cache.get("previous:rotating") == "one"
    with pytest.raises(ConfigurationError, match="versionStage"):
        await SecretsManagerLoader()("rotating?stage=AWSPREVIOUS")


async def test_get_many_batches_secrets_and_reports_each_missing_one(
    aws: CountingMotoServer, boto: Any, clock: FakeClock
) -> None:
    secrets = boto("secretsmanager")
    for index in range(3):
        secrets.create_secret(Name=f"svc/secret{index}", SecretString=f"value-{index}")
    aws.clear_calls()
    cache = Cache(ttl=60, clock=clock)
    keys = [f"secretsmanager:svc/secret{index}" for index in range(3)]

    values = await cache.get_many([*keys, "secretsmanager:svc/missing"], "none")

    assert values == {
        **{f"secretsmanager:svc/secret{index}": f"value-{index}" for index in range(3)},
        "secretsmanager:svc/missing": "none",
    }
    assert aws.count("secretsmanager.BatchGetSecretValue") == 1
    assert aws.count() == 1
    assert await cache.get("secretsmanager:svc/missing", "still none") == "still none"
    assert aws.count() == 1


async def test_a_role_without_batch_permission_falls_back_to_single_reads() -> None:
    class DeniedBatch(FailingClient):
        async def get_secret_value(self, **arguments: Any) -> Any:
            self.calls.append(("get_secret_value", arguments))
            return {"Name": arguments["SecretId"], "SecretString": f"v:{arguments['SecretId']}"}

    client = DeniedBatch(client_error("AccessDeniedException", "BatchGetSecretValue"))
    loader = SecretsManagerLoader(clients=clients_returning(client))

    values = await loader.load_many(["a", "b"])

    assert values == {"a": "v:a", "b": "v:b"}
    assert [call[0] for call in client.calls] == [
        "batch_get_secret_value",
        "get_secret_value",
        "get_secret_value",
    ]


async def test_a_failed_batch_call_fails_each_of_its_names() -> None:
    client = FailingClient(client_error("ThrottlingException", "BatchGetSecretValue"))
    loader = SecretsManagerLoader(clients=clients_returning(client))

    values = await loader.load_many(["a", "b"])

    assert set(values) == {"a", "b"}
    for name, error in values.items():
        assert isinstance(error, LoaderError)
        assert str(error).startswith(f"loading Secrets Manager secret {name!r} failed")
        assert "ThrottlingException" in str(error)
        assert error.__cause__ is client.error


async def test_a_malformed_name_fails_alone_in_a_batch(aws: CountingMotoServer, boto: Any) -> None:
    boto("secretsmanager").create_secret(Name="ok/one", SecretString="1")
    boto("secretsmanager").create_secret(Name="ok/two", SecretString="2")

    values = await SecretsManagerLoader().load_many(["ok/one", "ok/two", "ok/one?bad=1"])

    assert values["ok/one"] == "1"
    assert values["ok/two"] == "2"
    assert isinstance(values["ok/one?bad=1"], ConfigurationError)
