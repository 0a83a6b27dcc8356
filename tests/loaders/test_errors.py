"""Every AWS error maps to SourceNotFound or LoaderError, and no secret ever leaks."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from typing import Any

import pytest
from botocore.exceptions import ClientError

from polycache import (
    Cache,
    ConfigurationError,
    JsonSerializer,
    LoaderError,
    SerializationError,
    SourceNotFound,
)
from polycache.loaders import _aws
from polycache.loaders.appconfig import AppConfigLoader
from polycache.loaders.dynamodb import DynamoDbLoader
from polycache.loaders.s3 import S3Loader
from polycache.loaders.secretsmanager import SecretsManagerLoader
from polycache.loaders.ssm import SsmLoader
from tests.conftest import FakeClock
from tests.loaders.conftest import (
    FailingClient,
    client_error,
    clients_returning,
    response_metadata,
)
from tests.stand_ins.moto_server import CountingMotoServer

SECRET = "s3cr3t-Value-9f2c"


@pytest.mark.moto
@pytest.mark.parametrize(
    ("loader_class", "name", "key", "what", "code"),
    [
        (
            SsmLoader,
            "/missing/parameter",
            "ssm:/missing/parameter",
            "SSM parameter '/missing/parameter'",
            "ParameterNotFound",
        ),
        (
            SecretsManagerLoader,
            "missing/secret",
            "secretsmanager:missing/secret",
            "Secrets Manager secret 'missing/secret'",
            "ResourceNotFoundException",
        ),
        (
            S3Loader,
            "present-bucket/missing-key",
            "s3://present-bucket/missing-key",
            "S3 object 'present-bucket/missing-key'",
            "NoSuchKey",
        ),
        (
            DynamoDbLoader,
            "present_table?id=x1",
            "dynamodb://present_table?id=x1",
            "DynamoDB item 'present_table?id=x1'",
            None,
        ),
    ],
)
async def test_not_found_maps_to_source_not_found(
    aws: CountingMotoServer,
    boto: Any,
    loader_class: Any,
    name: str,
    key: str,
    what: str,
    code: str | None,
) -> None:
    boto("s3").create_bucket(Bucket="present-bucket")
    boto("dynamodb").create_table(
        TableName="present_table",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    with pytest.raises(SourceNotFound) as raised:
        await loader_class()(name)

    # The loader names its source and the name it was given; the key is the Cache's to attach.
    assert str(raised.value).startswith(f"{what} not found")
    assert raised.value.key is None
    if code is None:  # a missing DynamoDB item is an empty answer, not an AWS error
        assert "no such item" in str(raised.value)
    else:
        assert code in str(raised.value)
        assert isinstance(raised.value.__cause__, ClientError)
        assert raised.value.__cause__.response["Error"]["Code"] == code
    # Through the cache: the default, and the not-found remembered.
    cache = Cache(ttl=60)
    aws.clear_calls()
    assert await cache.get(key, "default") == "default"
    assert await cache.get(key, "again") == "again"
    assert aws.count() == 1  # DynamoDB too: the key's type is guessed, no DescribeTable


LOADERS = [
    ("ssm", SsmLoader, "/prod/db/url", "SSM parameter '/prod/db/url'"),
    ("secretsmanager", SecretsManagerLoader, "prod/db", "Secrets Manager secret 'prod/db'"),
    ("s3", S3Loader, "bucket/key", "S3 object 'bucket/key'"),
    ("dynamodb", DynamoDbLoader, "table?id=1", "DynamoDB item 'table?id=1'"),
]


@pytest.mark.parametrize(("scheme", "loader_class", "name", "what"), LOADERS)
@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("AccessDeniedException", 400),
        ("AccessDenied", 403),
        ("ThrottlingException", 400),
        ("ProvisionedThroughputExceededException", 400),
        ("InternalServerError", 500),
    ],
)
async def test_other_errors_map_to_loader_error_naming_source_name_and_code(
    scheme: str, loader_class: Any, name: str, what: str, code: str, status: int
) -> None:
    error = client_error(code, "SomeOperation", status)
    loader = loader_class(clients=clients_returning(FailingClient(error)))
    cache = Cache(ttl=60)
    # Registered under a scheme of the user's: the message must not invent a key of its own.
    cache.register_loader("config", loader)

    with pytest.raises(LoaderError) as raised:
        await cache.get(f"config:{name}")

    assert not isinstance(raised.value, SourceNotFound)
    message = str(raised.value)
    assert message == f"loading {what} failed: AWS error {code} during SomeOperation"
    assert f"{scheme}:" not in message
    assert raised.value.__cause__ is error


async def test_errors_that_are_not_client_errors_are_named_too() -> None:
    error = TimeoutError()
    loader = SsmLoader(clients=clients_returning(FailingClient(error)))
    with pytest.raises(
        LoaderError, match=r"^loading SSM parameter '/x' timed out \(TimeoutError\)$"
    ) as raised:
        await loader("/x")
    assert raised.value.__cause__ is error


async def test_batches_map_errors_per_name() -> None:
    error = client_error("AccessDeniedException", "GetParameters")
    values = await SsmLoader(clients=clients_returning(FailingClient(error))).load_many(
        ["/a", "/b"]
    )
    assert {name: type(value) for name, value in values.items()} == {
        "/a": LoaderError,
        "/b": LoaderError,
    }
    assert str(values["/a"]).startswith("loading SSM parameter '/a' failed")
    assert values["/b"].__cause__ is error


@pytest.mark.moto
async def test_secret_values_never_appear_in_logs_reprs_or_messages(
    aws: CountingMotoServer, boto: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="polycache")
    boto("secretsmanager").create_secret(Name="prod/token", SecretString=f"not json {SECRET}")
    boto("ssm").put_parameter(Name="/prod/token", Value=SECRET, Type="SecureString")
    cache = Cache(ttl=10, stale_if_error=600, clock=clock)
    json_loader = SecretsManagerLoader(transform="json")
    cache.register_loader("json-secret", json_loader)
    texts: list[str] = [repr(cache), repr(json_loader), repr(SsmLoader())]

    assert await cache.get("secretsmanager:prod/token") == f"not json {SECRET}"
    assert await cache.get("ssm:/prod/token") == SECRET
    with pytest.raises(LoaderError) as bad_json:
        await cache.get("json-secret:prod/token")
    texts += [str(bad_json.value), repr(bad_json.value), repr(bad_json.value.__cause__)]
    # A failing refresh serves the old secret and logs the failure.
    failing = SsmLoader(clients=clients_returning(FailingClient(client_error("Throttling", "Op"))))
    cache.register_loader("ssm", failing)
    clock.advance(11)
    assert await cache.get("ssm:/prod/token") == SECRET
    texts += [repr(cache.stats), repr(cache.backend)]

    assert caplog.records, "the stale-if-error serve should have been logged"
    for text in [*texts, caplog.text]:
        assert SECRET not in text


def test_error_code_reads_client_errors_and_anything_else() -> None:
    assert _aws.error_code(client_error("ParameterNotFound", "GetParameter")) == "ParameterNotFound"
    assert (
        _aws.error_code(ClientError({"ResponseMetadata": response_metadata(304)}, "Get")) == "304"
    )
    assert _aws.error_code(ValueError("x")) == "ValueError"
    original = LoaderError("already ours", key="k")
    assert _aws.translate_error(original, "other") is original


def _chain(error: BaseException) -> list[BaseException]:
    """The error and every exception reachable through __cause__ and __context__."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        pending += [current.__cause__, current.__context__]
    return seen


def _assert_no_secret_in_chain(error: BaseException) -> None:
    texts = [text for each in _chain(error) for text in (repr(each), str(each), repr(each.args))]
    texts.append("".join(traceback.format_exception(error)))
    for text in texts:
        assert SECRET not in text
        assert "hunter2" not in text
    # The decoding errors keep the document (`.doc`, `.object`): none of them is in the chain.
    assert not any(
        isinstance(each, UnicodeDecodeError | json.JSONDecodeError) for each in _chain(error)
    )


SECRET_BYTES = b'{"password": "hunter2-\xff-' + SECRET.encode() + b'"'


@pytest.mark.moto
@pytest.mark.parametrize(
    "value", [SECRET_BYTES, SECRET_BYTES.replace(b"\xff", b"!")], ids=["undecodable", "unparsable"]
)
async def test_no_secret_in_the_chain_of_a_failed_json_transform(
    aws: CountingMotoServer, boto: Any, value: bytes
) -> None:
    boto("secretsmanager").create_secret(Name="prod/binary", SecretBinary=value)

    with pytest.raises(LoaderError) as raised:
        await SecretsManagerLoader(transform="json")("prod/binary")

    message = str(raised.value)
    assert message.startswith("cannot apply transform 'json' to Secrets Manager secret")
    # The kind and the position stay; the bytes go.
    assert ("position 22" in message) if b"\xff" in value else ("line 1 column" in message)
    _assert_no_secret_in_chain(raised.value)


@pytest.mark.parametrize(
    ("stored", "where"),
    [
        (b"j" + SECRET_BYTES, "position 22"),
        (b"j" + SECRET_BYTES.replace(b"\xff", b"!"), "line 1 column"),
        (b"s\xffhunter2" + SECRET.encode(), "position 0"),
    ],
    ids=["json-undecodable", "json-unparsable", "str-undecodable"],
)
def test_no_secret_in_the_chain_of_an_unreadable_stored_value(stored: bytes, where: str) -> None:
    with pytest.raises(SerializationError) as raised:
        JsonSerializer().loads(stored)

    assert where in str(raised.value)
    _assert_no_secret_in_chain(raised.value)


@pytest.mark.parametrize(
    ("loader_class", "scheme"),
    [
        (SsmLoader, "ssm"),
        (SecretsManagerLoader, "secretsmanager"),
        (S3Loader, "s3"),
        (DynamoDbLoader, "dynamodb"),
        (AppConfigLoader, "appconfig"),
    ],
)
def test_a_missing_extra_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch, loader_class: Any, scheme: str
) -> None:
    monkeypatch.setitem(sys.modules, "botocore", None)  # as if botocore were not installed

    with pytest.raises(ConfigurationError) as raised:
        loader_class()

    assert str(raised.value) == (
        f"the {scheme}: loader needs its extra: pip install 'polycache[aws]' "
        "(botocore is not installed)"
    )
    # Clients of the caller's own need no botocore of ours.
    loader_class(clients=clients_returning(FailingClient(ValueError())))


async def test_a_missing_extra_fails_at_the_first_key_of_its_scheme(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "botocore", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'polycache\[aws\]'"):
        await Cache().get("ssm:/prod/db/url")


def test_the_appconfig_agent_needs_no_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "botocore", None)
    assert "agent" in repr(AppConfigLoader(agent=True, environ={}))
