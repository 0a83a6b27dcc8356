"""The Momento backend with the real momento SDK against the Momento-protocol stand-in."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from polycache import (
    BackendError,
    BackendTimeout,
    Cache,
    ConfigurationError,
    Entry,
    SerializationError,
)
from polycache.backends.momento import MAX_ITEM_BYTES, MomentoBackend
from tests.momento.helpers import RecordingFactory, fake_api_key
from tests.stand_ins.momento_fixtures import TEST_CACHE, item_name
from tests.stand_ins.momento_server import MomentoStandIn

pytestmark = pytest.mark.momento


def entry(value: bytes, *, ttl: float = 60.0, keep: float = 0.0) -> Entry:
    now = time.time()
    return Entry(value, now + ttl, now + ttl, now + ttl + keep)


async def test_get_set_delete_through_a_cache(momento: MomentoStandIn) -> None:
    async with Cache(momento.url(TEST_CACHE)) as cache:
        assert await cache.get("k") is None
        await cache.set("k", {"a": [1, 2]})
        assert await cache.get("k") == {"a": [1, 2]}
        await cache.delete("k")
        assert await cache.get("k") is None
    calls = momento.calls()
    assert calls["Set"] == 1
    assert calls["Delete"] == 1
    assert calls["Get"] == 3 + 1  # and the namespace's generation, read once when connecting


async def test_item_ttl_is_the_entry_lifetime(momento: MomentoStandIn) -> None:
    async with Cache(momento.url(TEST_CACHE), ttl=30, stale_ttl=90) as cache:
        await cache.set("k", "v")
    remaining = momento.items(TEST_CACHE)[item_name("k")]
    assert 119_000 < remaining <= 120_000


async def test_items_expire_on_the_server(
    momento_backend: MomentoBackend, momento: MomentoStandIn
) -> None:
    await momento_backend.set("short", entry(b"v", ttl=0.3))
    assert await momento_backend.get("short") is not None
    await asyncio.sleep(0.45)
    assert item_name("short") not in momento.items(TEST_CACHE)
    assert await momento_backend.get("short") is None


async def test_an_already_expired_entry_deletes_instead(
    momento_backend: MomentoBackend, momento: MomentoStandIn
) -> None:
    await momento_backend.set("k", entry(b"old"))
    await momento_backend.set("k", entry(b"new", ttl=-1))
    assert await momento_backend.get("k") is None
    assert momento.calls()["Set"] == 1


async def test_fail_open_when_unavailable(momento: MomentoStandIn) -> None:
    cache = Cache(momento.url(TEST_CACHE))
    momento.fault("UNAVAILABLE")
    started = time.perf_counter()

    async def load() -> str:
        return "from the loader"

    assert await cache.get_or_load("k", load) == "from the loader"
    assert time.perf_counter() - started < 1.0
    # The read failed before the answer; the write of the loaded value fails after it.
    for _ in range(100):
        if cache.stats.backend_errors == 2:
            break
        await asyncio.sleep(0.02)
    assert cache.stats.backend_errors == 2
    # Each operation tried to connect, which reads the namespace's generation; the SDK
    # retries UNAVAILABLE three times.
    assert momento.calls()["Get"] == 2 * 4
    await cache.aclose()


async def test_fail_open_when_slow_is_bounded_by_backend_timeout(momento: MomentoStandIn) -> None:
    cache = Cache(momento.url(TEST_CACHE), backend_timeout=0.2)
    momento.fault(delay=5.0)
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        return "loaded"

    started = time.perf_counter()
    assert await cache.get_or_load("k", load) == "loaded"
    elapsed = time.perf_counter() - started
    # One timed-out read; the write runs after the caller has its answer.
    assert 0.2 <= elapsed < 0.4
    assert loads == 1
    assert cache.stats.backend_errors == 1
    await asyncio.sleep(0.3)
    assert cache.stats.backend_errors == 2  # the write, cut at 0.2 s
    momento.clear_faults()
    await cache.aclose()


async def test_fail_closed_raises_backend_error_with_the_sdk_code(momento: MomentoStandIn) -> None:
    cache = Cache(momento.url(TEST_CACHE), fail_open=False)
    momento.fault("UNAVAILABLE", details="the cell is down")
    with pytest.raises(BackendError, match="SERVER_UNAVAILABLE: the cell is down") as caught:
        await cache.get("k")
    from momento.errors import SdkException

    assert isinstance(caught.value.__cause__, SdkException)
    await cache.aclose()


async def test_fail_closed_timeout_is_backend_timeout(momento: MomentoStandIn) -> None:
    cache = Cache(momento.url(TEST_CACHE), fail_open=False, backend_timeout=0.2)
    momento.fault(delay=2.0)
    with pytest.raises(BackendTimeout):
        await cache.get("k")
    await cache.aclose()


async def test_sdk_deadline_maps_to_backend_timeout(momento: MomentoStandIn) -> None:
    backend = MomentoBackend.from_url(momento.url(TEST_CACHE, request_timeout=0.1))
    momento.fault(delay=1.0)
    with pytest.raises(BackendTimeout, match="TIMEOUT_ERROR") as caught:
        await backend.get("k")
    from momento.errors import SdkException

    assert isinstance(caught.value.__cause__, SdkException)
    await backend.aclose()


async def test_auth_failure_maps_to_backend_error(momento: MomentoStandIn) -> None:
    momento.require_api_key(fake_api_key("expected"))
    backend = MomentoBackend.from_url(momento.url(TEST_CACHE))
    with pytest.raises(BackendError, match=r"AUTHENTICATION_ERROR.*MOMENTO_API_KEY") as caught:
        await backend.get("k")
    assert not isinstance(caught.value, BackendTimeout)
    await backend.aclose()


async def test_the_key_is_sent_to_a_local_server(
    momento: MomentoStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = fake_api_key("local")
    momento.require_api_key(key)
    monkeypatch.setenv("MOMENTO_API_KEY", key)
    backend = MomentoBackend.from_url(momento.url(TEST_CACHE))
    await backend.set("k", entry(b"v"))
    assert (await backend.get("k")) is not None
    await backend.aclose()


async def test_missing_cache_names_the_fix(momento: MomentoStandIn) -> None:
    backend = MomentoBackend.from_url(momento.url("no-such-cache"))
    with pytest.raises(BackendError, match=r"NOT_FOUND_ERROR.*create_cache=true"):
        await backend.get("k")
    await backend.aclose()


async def test_create_cache_if_missing(momento: MomentoStandIn) -> None:
    backend = MomentoBackend.from_url(momento.url("fresh-cache", create_cache="true"))
    await backend.set("k", entry(b"v"))
    again = MomentoBackend.from_url(momento.url("fresh-cache", create_cache="true"))
    read = await again.get("k")  # CreateCache answers "already exists": that is fine
    assert read is not None and read.value == b"v"
    assert momento.calls()["CreateCache"] == 2
    await backend.aclose()
    await again.aclose()


async def test_value_over_the_item_limit_sends_nothing(momento: MomentoStandIn) -> None:
    cache = Cache(momento.url(TEST_CACHE))
    limit = cache.backend.max_item_bytes
    assert limit is not None and limit <= MAX_ITEM_BYTES
    with pytest.raises(SerializationError, match="limit"):
        await cache.set("big", "x" * MAX_ITEM_BYTES)
    assert momento.count() == 0
    await cache.aclose()


async def test_item_over_five_mib_at_the_backend_sends_nothing(
    momento_backend: MomentoBackend, momento: MomentoStandIn
) -> None:
    with pytest.raises(SerializationError, match="Momento's limit"):
        await momento_backend.set("k" * 2000, entry(b"x" * (momento_backend.max_item_bytes or 0)))
    assert momento.count() == 0
    # A value just under the budget with a short key does fit in one item.
    await momento_backend.set("k", entry(b"x" * (momento_backend.max_item_bytes or 0)))
    assert momento.calls()["Set"] == 1


async def test_freshness_over_24_hours_is_stored_for_24_hours(momento: MomentoStandIn) -> None:
    # Momento keeps an item at most 24 h: a longer ttl must never turn a load into an error.
    cache = Cache(momento.url(TEST_CACHE), ttl=2 * 86400, fail_open=False)
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        return "loaded"

    assert await cache.get_or_load("k", load) == "loaded"
    assert await cache.get_or_load("k", load) == "loaded"
    other = Cache(momento.url(TEST_CACHE), ttl=2 * 86400, fail_open=False)
    assert await other.get_or_load("k", load) == "loaded"  # read from Momento, not loaded
    assert loads == 1
    assert cache.stats.load_errors == 0 and cache.stats.backend_errors == 0
    assert 86_390_000 < momento.items(TEST_CACHE)[item_name("k")] <= 86_400_000
    await cache.aclose()
    await other.aclose()


async def test_stale_window_past_24_hours_is_capped(
    momento_backend: MomentoBackend, momento: MomentoStandIn
) -> None:
    await momento_backend.set("k", entry(b"v", ttl=3600, keep=2 * 86400))
    assert momento.items(TEST_CACHE)[item_name("k")] <= 86_400_000


async def test_two_caches_on_one_momento_cache_see_each_others_writes(
    momento: MomentoStandIn,
) -> None:
    first = Cache(momento.url(TEST_CACHE))
    second = Cache(momento.url(TEST_CACHE))
    await first.set("shared", {"from": "first"})
    assert await second.get("shared") == {"from": "first"}
    await second.set("shared", "changed")
    assert await first.get("shared") == "changed"
    await second.delete("shared")
    assert await first.get("shared") is None
    await first.aclose()
    await second.aclose()


async def test_one_client_per_loop_is_reused(momento: MomentoStandIn) -> None:
    factory = RecordingFactory()
    backend = MomentoBackend(
        TEST_CACHE, endpoint=("127.0.0.1", momento.port), client_factory=factory
    )
    await asyncio.gather(*(backend.set(f"k{index}", entry(b"v")) for index in range(20)))
    for index in range(20):
        assert await backend.get(f"k{index}") is not None
    assert len(factory.built) == 1
    await backend.aclose()
    assert await backend.get("k0") is not None  # usable again: a new client
    assert len(factory.built) == 2
    await backend.aclose()


def test_a_new_event_loop_rebuilds_the_client(momento: MomentoStandIn) -> None:
    factory = RecordingFactory()
    backend = MomentoBackend(
        TEST_CACHE, endpoint=("127.0.0.1", momento.port), client_factory=factory
    )

    async def invocation(value: bytes) -> Entry | None:
        await backend.set("k", entry(value))
        return await backend.get("k")

    # asyncio.run per invocation, as a plain Lambda handler does: each loop gets its own client.
    first = asyncio.run(invocation(b"one"))
    second = asyncio.run(invocation(b"two"))
    assert first is not None and first.value == b"one"
    assert second is not None and second.value == b"two"
    assert len(factory.built) == 2
    assert factory.built[0][3] is not factory.built[1][3]

    async def close() -> None:
        await backend.aclose()

    asyncio.run(close())


async def test_lambda_configuration_keeps_keepalive_off(momento: MomentoStandIn) -> None:
    factory = RecordingFactory()
    backend = MomentoBackend(
        TEST_CACHE,
        endpoint=("127.0.0.1", momento.port),
        request_timeout=0.7,
        client_factory=factory,
        environ={"AWS_LAMBDA_FUNCTION_NAME": "handler"},
    )
    assert "lambda_tuned=True" in repr(backend)
    await backend.get("k")
    from momento import Configurations

    configuration = factory.built[0][0]
    assert isinstance(configuration, Configurations.Lambda)
    grpc_configuration = configuration.get_transport_strategy().get_grpc_configuration()
    assert grpc_configuration.get_deadline().total_seconds() == pytest.approx(0.7)
    assert grpc_configuration.get_keepalive_time() is None
    assert grpc_configuration.get_keepalive_timeout() is None
    assert grpc_configuration.get_keepalive_permit_without_calls() == 0
    await backend.aclose()


async def test_outside_lambda_the_in_region_configuration_is_used(momento: MomentoStandIn) -> None:
    factory = RecordingFactory()
    backend = MomentoBackend(
        TEST_CACHE, endpoint=("127.0.0.1", momento.port), client_factory=factory, environ={}
    )
    await backend.get("k")
    from momento import Configurations

    configuration = factory.built[0][0]
    assert isinstance(configuration, Configurations.InRegion.Default)
    assert factory.built[0][1].cache_endpoint == "127.0.0.1"
    assert factory.built[0][1].port == momento.port
    await backend.aclose()


async def test_the_key_is_in_no_repr_message_or_log(
    momento: MomentoStandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = fake_api_key("never-shown")
    monkeypatch.setenv("MOMENTO_API_KEY", key)
    monkeypatch.setenv("MOMENTO_ENDPOINT", "cell-test.example.invalid")
    cache = Cache(momento.url(TEST_CACHE))
    momento.require_api_key(fake_api_key("something-else"))
    messages = [repr(cache), repr(cache.backend), str(cache.settings)]
    await cache.set("k", "v")  # fails open: logged
    for fault in ("UNAVAILABLE", "UNAUTHENTICATED", "PERMISSION_DENIED"):
        momento.fault(fault)
        failing = Cache(momento.url(TEST_CACHE), fail_open=False)
        with pytest.raises(BackendError) as caught:
            await failing.get("k")
        messages += [str(caught.value), repr(caught.value), str(caught.value.__cause__)]
        await failing.aclose()
    await cache.aclose()
    hosted = MomentoBackend(TEST_CACHE, client_factory=RecordingFactory())
    messages.append(repr(hosted))
    text = "\n".join([*messages, caplog.text])
    for fragment in (key, key[:20], key[-20:], key.split(".")[1]):
        assert fragment not in text


async def test_unimplemented_rpcs_answer_unimplemented(momento: MomentoStandIn) -> None:
    import grpc
    from momento_wire_types import cacheclient_pb2 as cache_pb
    from momento_wire_types import cacheclient_pb2_grpc as cache_grpc
    from momento_wire_types import controlclient_pb2 as control_pb
    from momento_wire_types import controlclient_pb2_grpc as control_grpc

    metadata = (("cache", TEST_CACHE), ("authorization", ""))
    async with grpc.aio.insecure_channel(momento.endpoint) as channel:
        stubs: tuple[Any, Any] = (cache_grpc.ScsStub, control_grpc.ScsControlStub)  # untyped
        data, control = (stub(channel) for stub in stubs)
        with pytest.raises(grpc.aio.AioRpcError) as increment:
            await data.Increment(cache_pb._IncrementRequest(cache_key=b"n"), metadata=metadata)
        assert increment.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.aio.AioRpcError) as batch:
            async for _ in data.GetBatch(cache_pb._GetBatchRequest(), metadata=metadata):
                pass
        assert batch.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.aio.AioRpcError) as keys:
            await control.ListSigningKeys(control_pb._ListSigningKeysRequest(), metadata=metadata)
        assert keys.value.code() == grpc.StatusCode.UNIMPLEMENTED
        listed = await control.ListCaches(control_pb._ListCachesRequest(), metadata=metadata)
        assert [cache.cache_name for cache in listed.cache] == [TEST_CACHE]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("momento://", "must name one cache"),
        ("momento://c/extra", "must name one cache"),
        ("momento://c?endpoint=nohost", "host:port"),
        ("momento://c?endpoint=127.0.0.1:99999", "host:port"),
        ("momento://c?endpoint=127.0.0.1:1&default_ttl=90000", "24 h"),
        ("momento://c?endpoint=127.0.0.1:1&default_ttl=0", "greater than 0"),
        ("momento://c?endpoint=127.0.0.1:1&request_timeout=0", "greater than 0"),
        ("momento://c?endpoint=127.0.0.1:1&create_cache=maybe", "true or false"),
        ("momento://c?endpoint=127.0.0.1:1&colour=blue", "unknown option"),
        ("momento://c?endpoint=127.0.0.1:1&connect_timeout=0", "greater than 0"),
        ("momento://c?endpoint=127.0.0.1:1&generation_refresh=-1", "non-negative"),
        ("momento://c?endpoint=127.0.0.1:1&namespace=", "namespace must be a non-empty str"),
        ("momento://c?endpoint=127.0.0.1:1&namespace=a:b", "without ':'"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Cache(url)


def test_hosted_momento_without_credentials_names_the_variables() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"MOMENTO_API_KEY.*MOMENTO_ENDPOINT.*POLYCACHE_MOMENTO_API_KEY_SECRET",
    ):
        Cache("momento://sessions")
