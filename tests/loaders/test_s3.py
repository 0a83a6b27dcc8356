"""S3 through the Cache, against moto: ETag revalidation, size limit, files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from polycache import Cache, ConfigurationError, LoaderError, SourceNotFound
from polycache.loaders.s3 import S3Loader
from tests.conftest import FakeClock
from tests.stand_ins.moto_server import CountingMotoServer

pytestmark = pytest.mark.moto

BODY = b'{"model": "v3", "weights": [0.1, 0.2]}' * 50


@pytest.fixture
def bucket(aws: CountingMotoServer, boto: Any) -> str:
    boto("s3").create_bucket(Bucket="models")
    boto("s3").put_object(Bucket="models", Key="v3/config.json", Body=BODY)
    aws.clear_calls()
    return "models"


async def test_an_unchanged_object_revalidates_without_a_body(
    aws: CountingMotoServer, bucket: str, clock: FakeClock
) -> None:
    cache = Cache(ttl=10, clock=clock)
    first = await cache.get("s3://models/v3/config.json")
    assert first == BODY

    clock.advance(11)
    second = await cache.get("s3://models/v3/config.json")

    assert aws.count("s3.GET /models/v3/config.json") == 2
    # The 304 path keeps the cached object itself: nothing was downloaded again.
    assert second is first
    assert cache.stats.loads == 2


async def test_the_304_path_reports_not_modified(aws: CountingMotoServer, bucket: str) -> None:
    loader = S3Loader()
    loaded = await loader("models/v3/config.json")
    assert loaded.value == BODY
    assert loaded.validator

    again = await loader.load_conditional("models/v3/config.json", loaded.validator)

    assert again.modified is False
    assert again.value is None
    assert again.validator == loaded.validator
    assert aws.count("s3.GET /models/v3/config.json") == 2


async def test_a_changed_object_is_downloaded_again(
    aws: CountingMotoServer, boto: Any, bucket: str, clock: FakeClock
) -> None:
    cache = Cache(ttl=10, stale_ttl=60, clock=clock)
    assert await cache.get("s3://models/v3/config.json") == BODY
    boto("s3").put_object(Bucket="models", Key="v3/config.json", Body=b"changed")
    clock.advance(100)

    assert await cache.get("s3://models/v3/config.json") == b"changed"
    assert aws.count("s3.GET /models/v3/config.json") == 2


async def test_missing_keys_and_buckets(aws: CountingMotoServer, bucket: str) -> None:
    cache = Cache(ttl=10)
    assert await cache.get("s3://models/v9/nothing", "absent") == "absent"
    with pytest.raises(SourceNotFound) as not_found:
        await S3Loader()("models/v9/nothing")
    assert "NoSuchKey" in str(not_found.value)
    with pytest.raises(LoaderError, match="NoSuchBucket") as no_bucket:
        await cache.get("s3://no-such-bucket/key")
    assert not isinstance(no_bucket.value, SourceNotFound)
    assert str(no_bucket.value).startswith("loading S3 object 'no-such-bucket/key' failed")


async def test_the_size_limit(aws: CountingMotoServer, bucket: str) -> None:
    with pytest.raises(LoaderError, match=r"over max_bytes=100") as raised:
        await S3Loader(max_bytes=100)("models/v3/config.json")
    assert str(raised.value) == (
        "S3 object 'models/v3/config.json' is 1900 bytes, over max_bytes=100"
    )
    assert (await S3Loader(max_bytes=len(BODY))("models/v3/config.json")).value == BODY


async def test_writing_objects_to_files(
    aws: CountingMotoServer, bucket: str, tmp_path: Path, clock: FakeClock
) -> None:
    cache = Cache(ttl=10, clock=clock)
    cache.register_loader("file", S3Loader(directory=tmp_path))

    path = await cache.get("file://models/v3/config.json")

    assert path == str(tmp_path / "models" / "v3" / "config.json")
    assert Path(path).read_bytes() == BODY  # noqa: ASYNC240 - a small local file
    assert [entry.name for entry in (tmp_path / "models" / "v3").iterdir()] == ["config.json"]
    # Revalidation keeps the file; a missing file is downloaded again, unconditionally.
    clock.advance(11)
    assert await cache.get("file://models/v3/config.json") == path
    Path(path).unlink()  # noqa: ASYNC240 - a small local file
    clock.advance(11)
    assert await cache.get("file://models/v3/config.json") == path
    assert Path(path).read_bytes() == BODY  # noqa: ASYNC240 - a small local file
    with pytest.raises(ConfigurationError, match="outside"):
        await S3Loader(directory=tmp_path)("models/../../etc/passwd")


async def test_transform_on_objects(aws: CountingMotoServer, boto: Any, bucket: str) -> None:
    boto("s3").put_object(Bucket="models", Key="app/settings.json", Body=b'{"level": 3}')
    boto("s3").put_object(Bucket="models", Key="app/notes.txt", Body=b"plain")

    assert (await S3Loader(transform="auto")("models/app/settings.json")).value == {"level": 3}
    assert (await S3Loader(transform="auto")("models/app/notes.txt")).value == b"plain"
    with pytest.raises(
        LoaderError, match=r"not valid JSON \(JSONDecodeError: Extra data at line 1 column 39\)"
    ):
        await S3Loader(transform="json")("models/v3/config.json")


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="max_bytes"):
        S3Loader(max_bytes=-1)
    with pytest.raises(ConfigurationError, match="not both"):
        S3Loader(directory=tmp_path, transform="json")


async def test_a_key_without_an_object_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="needs a name like bucket/key"):
        await S3Loader()("just-a-bucket")
