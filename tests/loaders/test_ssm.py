"""SSM Parameter Store through the Cache, against moto, counting the calls AWS would bill."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from polycache import Cache, ConfigurationError, LoaderError
from polycache.loaders.ssm import SsmLoader
from tests.conftest import FakeClock
from tests.loaders.conftest import wait_until
from tests.stand_ins.moto_server import CountingMotoServer

pytestmark = pytest.mark.moto


def put(boto: Any, name: str, value: str, kind: str = "String") -> None:
    boto("ssm").put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)


async def test_n_gets_within_the_ttl_cost_one_call(
    aws: CountingMotoServer, boto: Any, clock: FakeClock
) -> None:
    put(boto, "/prod/db/url", "postgres://db")
    aws.clear_calls()
    cache = Cache(ttl=60, clock=clock)

    values = [await cache.get("ssm:/prod/db/url") for _ in range(20)]
    clock.advance(59)
    values.append(await cache.get("ssm:/prod/db/url"))

    assert values == ["postgres://db"] * 21
    assert aws.count("ssm.GetParameter") == 1
    assert aws.count() == 1
    clock.advance(2)
    assert await cache.get("ssm:/prod/db/url") == "postgres://db"
    assert aws.count("ssm.GetParameter") == 2


async def test_get_many_loads_25_parameters_in_3_calls(
    aws: CountingMotoServer, boto: Any, clock: FakeClock
) -> None:
    for index in range(25):
        put(boto, f"/app/param{index}", f"value-{index}")
    aws.clear_calls()
    cache = Cache(ttl=60, clock=clock)
    keys = [f"ssm:/app/param{index}" for index in range(25)]

    values = await cache.get_many(keys)

    assert values == {f"ssm:/app/param{index}": f"value-{index}" for index in range(25)}
    assert aws.count("ssm.GetParameters") <= 3
    assert aws.count() == aws.count("ssm.GetParameters")
    assert await cache.get_many(keys) == values
    assert aws.count() <= 3


async def test_get_many_reports_missing_names_without_sinking_the_batch(
    aws: CountingMotoServer, boto: Any, clock: FakeClock
) -> None:
    put(boto, "/app/a", "A")
    put(boto, "/app/b", "B")
    aws.clear_calls()
    cache = Cache(ttl=60, clock=clock)

    values = await cache.get_many(["ssm:/app/a", "ssm:/app/missing", "ssm:/app/b"], "absent")

    assert values == {"ssm:/app/a": "A", "ssm:/app/missing": "absent", "ssm:/app/b": "B"}
    assert aws.count() == 1
    # The missing name is remembered, like a single get's not-found.
    assert await cache.get("ssm:/app/missing", "gone") == "gone"
    assert aws.count() == 1


async def test_a_missing_parameter_is_remembered_for_negative_ttl(
    aws: CountingMotoServer, boto: Any, clock: FakeClock
) -> None:
    cache = Cache(ttl=60, negative_ttl=30, clock=clock)

    assert await cache.get("ssm:/not/there") is None
    assert await cache.get("ssm:/not/there", "default") == "default"
    clock.advance(29)
    assert await cache.get("ssm:/not/there") is None
    assert aws.count("ssm.GetParameter") == 1

    put(boto, "/not/there", "now it is")
    clock.advance(2)
    assert await cache.get("ssm:/not/there") == "now it is"
    assert aws.count("ssm.GetParameter") == 2


async def test_a_stale_hit_serves_at_once_and_refreshes_once(
    aws: CountingMotoServer, boto: Any, clock: FakeClock
) -> None:
    put(boto, "/feature/flag", "old")
    cache = Cache(ttl=10, stale_ttl=300, clock=clock)
    assert await cache.get("ssm:/feature/flag") == "old"
    put(boto, "/feature/flag", "new")
    aws.clear_calls()
    clock.advance(11)

    served = [await cache.get("ssm:/feature/flag") for _ in range(5)]

    # Served from the stale entry at once; one refresh runs behind it.
    assert served == ["old"] * 5
    assert cache.stats.stale_hits == 5
    await wait_until(lambda: aws.count("ssm.GetParameter") == 1)
    for _ in range(500):
        if await cache.get("ssm:/feature/flag") == "new":
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the refresh never stored the new value")
    assert aws.count("ssm.GetParameter") == 1
    assert cache.stats.loads == 2


async def test_versions_labels_types_and_decryption(aws: CountingMotoServer, boto: Any) -> None:
    put(boto, "/svc/key", "first", "SecureString")
    put(boto, "/svc/key", "second", "SecureString")
    boto("ssm").label_parameter_version(Name="/svc/key", ParameterVersion=1, Labels=["golden"])
    put(boto, "/svc/hosts", "a.example,b.example", "StringList")
    cache = Cache(ttl=60)

    assert await cache.get("ssm:/svc/key") == "second"
    assert await cache.get("ssm:/svc/key:1") == "first"
    assert await cache.get("ssm:/svc/key:golden") == "first"
    assert await cache.get("ssm:/svc/key:7") is None
    assert await cache.get("ssm:/svc/hosts") == ["a.example", "b.example"]
    assert await SsmLoader(decrypt=False)("/svc/key") != "second"


async def test_selectors_in_get_many_are_loaded_one_by_one(
    aws: CountingMotoServer, boto: Any
) -> None:
    put(boto, "/svc/key", "first")
    put(boto, "/svc/key", "second")
    put(boto, "/svc/other", "other")
    aws.clear_calls()

    values = await SsmLoader().load_many(["/svc/key:1", "/svc/key", "/svc/other"])

    assert values == {"/svc/key:1": "first", "/svc/key": "second", "/svc/other": "other"}
    assert aws.count("ssm.GetParameters") == 1
    assert aws.count("ssm.GetParameter") == 1


async def test_transforms(aws: CountingMotoServer, boto: Any) -> None:
    put(boto, "/cfg/settings.json", json.dumps({"debug": True, "level": 3}))
    put(boto, "/cfg/plain", json.dumps([1, 2]))
    put(boto, "/cfg/blob.binary", "aGVsbG8=")
    cache = Cache(ttl=60)
    cache.register_loader("auto", SsmLoader(transform="auto"))
    cache.register_loader("json", SsmLoader(transform="json"))

    assert await cache.get("auto:/cfg/settings.json") == {"debug": True, "level": 3}
    assert await cache.get("auto:/cfg/blob.binary") == b"hello"
    assert await cache.get("auto:/cfg/plain") == "[1, 2]"
    assert await cache.get("json:/cfg/plain") == [1, 2]
    with pytest.raises(LoaderError, match=r"json:/cfg/blob.binary|not valid JSON"):
        await cache.get("json:/cfg/blob.binary")


async def test_a_path_key_returns_every_parameter_under_it_across_pages(
    aws: CountingMotoServer, boto: Any
) -> None:
    for index in range(14):
        put(boto, f"/app/prod/p{index:02}", str(index))
    put(boto, "/app/prod/db/url", "postgres://db")
    put(boto, "/app/staging/p", "elsewhere")
    aws.clear_calls()
    cache = Cache(ttl=60)

    values = await cache.get("ssm:/app/prod/")

    assert values == {
        **{f"p{index:02}": str(index) for index in range(14)},
        "db/url": "postgres://db",
    }
    assert aws.count("ssm.GetParametersByPath") == 2
    assert await cache.get("ssm:/app/prod/") == values
    assert aws.count() == 2
    flat = await SsmLoader(recursive=False)("/app/prod/")
    assert "db/url" not in flat
    assert len(flat) == 14


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ConfigurationError, match="transform"):
        SsmLoader(transform="yaml")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="decrypt"):
        SsmLoader(decrypt="yes")  # type: ignore[arg-type]
    assert "SsmLoader(decrypt=True" in repr(SsmLoader())


async def test_an_empty_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="parameter name"):
        await SsmLoader()("")


async def test_a_malformed_name_fails_alone_in_a_batch(aws: CountingMotoServer, boto: Any) -> None:
    put(boto, "/app/a", "A")

    values = await SsmLoader().load_many(["/app/a", ""])

    assert values["/app/a"] == "A"
    assert isinstance(values[""], ConfigurationError)
