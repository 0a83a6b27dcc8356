"""`LeaseBackend.add` (set-if-absent) on the real stand-ins: Momento's `SetIfNotExists` on the
Momento-protocol server, the extension's conditional PUT on the extension process, Redis's
`SET ... PX ... NX` on real redis-server processes (standalone and cluster), and the near-cache
passing it through."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from polycache import BackendError, Cache, ConfigurationError, Entry, LeaseBackend
from polycache.backends.extension import ExtensionBackend
from polycache.backends.momento import MomentoBackend
from polycache.backends.near import NearCacheBackend
from polycache.backends.redis import RedisBackend
from tests.stand_ins.extension_process import ExtensionProcess
from tests.stand_ins.momento_fixtures import TEST_CACHE, item_name
from tests.stand_ins.momento_server import MomentoStandIn
from tests.stand_ins.redis_server import RedisCluster, RedisServer

ODD_KEYS = [
    "ssm:/prod/db/url",
    "a b/c?d#e%20f",
    "ünïcödé:ключ:鍵",
    "line\nbreak\ttab",
    "x" * 1500,
    "__polycache_lease__:users:42",
]

# One fixture per LeaseBackend under test; each yields the backend on its reset stand-in.
BACKENDS = [
    "momento",
    "extension",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis_cluster", marks=pytest.mark.redis),
    "near_momento",
    "near_extension",
    pytest.param("near_redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Each LeaseBackend, on its real stand-in, emptied before the test."""
    kind: str = request.param
    if kind.endswith("redis_cluster"):
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        remote: Any = RedisBackend.from_url(cluster.url, environ={})
    elif kind.endswith("redis"):
        server: RedisServer = request.getfixturevalue("redis_server")
        remote = RedisBackend.from_url(server.url, environ={})
    elif "momento" in kind:
        stand_in: MomentoStandIn = request.getfixturevalue("momento")
        remote = MomentoBackend.from_url(stand_in.url(TEST_CACHE))
    else:
        process: ExtensionProcess = request.getfixturevalue("extension_process")
        process.clear()
        remote = ExtensionBackend(port=process.port, token=process.token)
    built = NearCacheBackend(remote, local_ttl=30) if kind.startswith("near") else remote
    yield built
    await built.aclose()


async def test_the_first_add_stores_and_the_second_does_not(backend: Any) -> None:
    assert isinstance(backend, LeaseBackend)
    assert await backend.add("hot", b"holder-1", 30) is True
    assert await backend.add("hot", b"holder-2", 30) is False
    assert await backend.add("other", b"holder-2", 30) is True


async def test_after_delete_the_key_can_be_added_again(backend: Any) -> None:
    assert await backend.add("hot", b"1", 30) is True
    await backend.delete("hot")
    assert await backend.add("hot", b"2", 30) is True
    assert await backend.add("hot", b"3", 30) is False


@pytest.mark.slow
async def test_after_its_ttl_the_key_can_be_added_again(backend: Any) -> None:
    assert await backend.add("hot", b"1", 0.3) is True
    assert await backend.add("hot", b"2", 0.3) is False
    await asyncio.sleep(0.45)
    assert await backend.add("hot", b"3", 30) is True


async def test_a_key_holding_an_entry_is_not_added(backend: Any) -> None:
    now = time.time()
    await backend.set("taken", Entry(b"\x01value", now + 60, now + 60, now + 60))
    assert await backend.add("taken", b"lease", 30) is False


@pytest.mark.parametrize("key", ODD_KEYS, ids=lambda key: repr(key[:20]))
async def test_odd_keys(backend: Any, key: str) -> None:
    assert await backend.add(key, b"1", 30) is True
    assert await backend.add(key, b"2", 30) is False
    await backend.delete(key)
    assert await backend.add(key, b"3", 30) is True


async def test_of_many_concurrent_adds_exactly_one_stores(backend: Any) -> None:
    results = await asyncio.gather(*(backend.add("contended", b"%d" % i, 30) for i in range(20)))
    assert results.count(True) == 1


@pytest.mark.parametrize(
    ("key", "value", "ttl", "message"),
    [
        ("k", "not bytes", 30, "add stores bytes, got str"),
        ("k", b"v", 0, "add's ttl must be a positive number of seconds, got 0"),
        ("k", b"v", -1.5, "add's ttl must be a positive number of seconds, got -1.5"),
        ("k", b"v", float("inf"), "add's ttl must be a positive number of seconds, got inf"),
        ("k", b"v", "30", "add's ttl must be a number of seconds or a timedelta, got str"),
        ("", b"v", 30, "add takes a non-empty str key, got ''"),
    ],
)
async def test_bad_arguments_are_refused_before_anything_is_sent(
    backend: Any, key: Any, value: Any, ttl: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        await backend.add(key, value, ttl)
    assert await backend.add("k", b"v", 30) is True  # nothing was stored by the refused call


# -- Momento -------------------------------------------------------------------------------------


async def test_momento_add_is_one_set_if_not_exists_in_the_namespace(
    momento_backend: MomentoBackend, momento: MomentoStandIn
) -> None:
    await momento_backend.connect()
    momento.clear_calls()
    assert await momento_backend.add("k", b"holder", 12) is True
    assert momento.calls() == {"SetIfNotExists": 1}
    remaining = momento.items(TEST_CACHE)[item_name("k")]
    assert 11_000 < remaining <= 12_000


async def test_momento_add_follows_the_generation_after_clear(
    momento_backend: MomentoBackend, momento: MomentoStandIn
) -> None:
    assert await momento_backend.add("k", b"holder", 30) is True
    await momento_backend.clear()
    # The old generation's item is no longer this key: a new lease can be taken.
    assert await momento_backend.add("k", b"holder", 30) is True
    assert await momento_backend.add("k", b"holder", 30) is False
    names = [name for name in momento.items(TEST_CACHE) if name.endswith(":k")]
    assert len(names) == 2
    assert item_name("k") in names


async def test_momento_add_caps_the_ttl_at_24_hours(
    momento_backend: MomentoBackend, momento: MomentoStandIn
) -> None:
    assert await momento_backend.add("k", b"holder", 10 * 24 * 3600) is True
    assert momento.items(TEST_CACHE)[item_name("k")] > 23 * 3600 * 1000


async def test_momento_add_failure_is_a_backend_error(
    momento_backend: MomentoBackend, momento: MomentoStandIn
) -> None:
    await momento_backend.connect()
    momento.fault("PERMISSION_DENIED", methods=["SetIfNotExists"])
    with pytest.raises(BackendError, match="Momento add on cache 'polycache-test' failed"):
        await momento_backend.add("k", b"holder", 30)


# -- the extension -------------------------------------------------------------------------------


def _put(
    process: ExtensionProcess, key: str, body: bytes, **headers: str
) -> tuple[int, dict[str, Any] | None]:
    status, answer = process.request(
        "PUT", f"/v1/kv/{key}?ttl=30", body=body, headers=headers, timeout=5
    )
    return status, json.loads(answer) if answer else None


def test_extension_conditional_put_on_the_wire(extension_process: ExtensionProcess) -> None:
    extension_process.clear()
    condition = {"If-None-Match": "*", "Content-Type": "text/plain"}
    assert _put(extension_process, "lease%3Ak", b"one", **condition) == (204, None)
    status, error = _put(extension_process, "lease%3Ak", b"two", **condition)
    assert status == 412
    assert error is not None and error["error"] == "exists"
    # The value stored is the first one; a plain PUT still overwrites.
    assert extension_process.request("GET", "/v1/kv/lease%3Ak") == (200, b"one")
    assert _put(extension_process, "lease%3Ak", b"three") == (204, None)
    assert extension_process.request("GET", "/v1/kv/lease%3Ak") == (200, b"three")
    assert extension_process.request("DELETE", "/v1/kv/lease%3Ak")[0] == 204
    assert _put(extension_process, "lease%3Ak", b"four", **condition) == (204, None)


@pytest.mark.parametrize("condition", ['"an-etag"', "*, *", "W/*"])
def test_extension_refuses_other_if_none_match_values(
    extension_process: ExtensionProcess, condition: str
) -> None:
    extension_process.clear()
    status, error = _put(extension_process, "k", b"v", **{"If-None-Match": condition})
    assert status == 400
    assert error is not None and "If-None-Match takes only *" in error["message"]
    assert extension_process.request("GET", "/v1/kv/k")[0] == 404


async def test_extension_add_value_reads_back_exactly(
    extension_backend: ExtensionBackend, extension_process: ExtensionProcess
) -> None:
    # Bytes whose first byte is one of the serializer's tags are still stored as given.
    for value in (b"\x01", b"\x02{}", b"12345", b""):
        await extension_backend.delete("k")
        assert await extension_backend.add("k", value, 30) is True
        stored = await extension_backend.get("k")
        assert stored is not None and stored.value == value
        assert 29 < stored.expires_at - time.time() <= 30


async def test_extension_add_when_the_extension_is_down_is_a_backend_error(
    extension_process: ExtensionProcess,
) -> None:
    from tests.stand_ins.extension_process import free_port

    backend = ExtensionBackend(port=free_port(), token=extension_process.token)
    with pytest.raises(BackendError, match="cannot reach the extension"):
        await backend.add("k", b"v", 30)
    await backend.aclose()


# -- Redis ---------------------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_add_is_one_set_nx_px_under_the_key_prefix(redis_server: RedisServer) -> None:
    backend = RedisBackend.from_url(redis_server.url + "?key_prefix=app:", environ={})
    client = redis_server.client()
    client.config_resetstat()
    assert await backend.add("k", b"\x00holder", 12.5) is True
    assert await backend.add("k", b"other", 12.5) is False
    stats = client.info("commandstats")
    assert stats["cmdstat_set"]["calls"] == 2
    assert not {"cmdstat_get", "cmdstat_exists", "cmdstat_setnx", "cmdstat_pexpire"} & set(stats)
    assert client.get("app:k") == b"\x00holder"  # stored as given, not as an entry
    assert 12_000 < client.pttl("app:k") <= 12_500
    # A lease shorter than a millisecond still expires by itself.
    assert await backend.add("tiny", b"1", 0.0001) is True
    assert client.pttl("app:tiny") in (-2, 0, 1)
    await backend.aclose()


@pytest.mark.redis
async def test_redis_add_in_cluster_mode_lands_on_the_keys_node(
    redis_cluster: RedisCluster,
) -> None:
    backend = RedisBackend.from_url(redis_cluster.url, environ={})
    keys = [f"lease:{number}" for number in range(12)]
    assert await asyncio.gather(*(backend.add(key, b"1", 30) for key in keys)) == [True] * 12
    assert await asyncio.gather(*(backend.add(key, b"2", 30) for key in keys)) == [False] * 12
    per_node = [node.client().dbsize() for node in redis_cluster.nodes]
    assert sum(per_node) == 12 and all(per_node)  # spread over the slots of every node
    await backend.aclose()


@pytest.mark.redis
async def test_redis_add_when_the_server_is_down_is_a_backend_error() -> None:
    server = RedisServer().start()
    try:
        backend = RedisBackend.from_url(server.url, environ={})
        server.kill()
        with pytest.raises(BackendError, match=r"Redis SET NX on 127\.0\.0\.1:"):
            await backend.add("k", b"v", 30)
        await backend.aclose()
    finally:
        server.stop()


@pytest.mark.redis
async def test_a_cache_over_redis_takes_and_gives_back_its_lease(redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.config_resetstat()
    async with Cache(redis_server.url, lease_wait=2) as cache:
        assert await cache.get_or_load("k", _loaded) == "loaded"
    # Only the entry is left: the lease was taken (SET NX) and given back (UNLINK).
    assert client.keys("*") == [b"polycache:k"]
    stats = client.info("commandstats")
    assert stats["cmdstat_unlink"]["calls"] == 1
    assert stats["cmdstat_set"]["calls"] == 2  # the lease, then the entry


# -- the near-cache ------------------------------------------------------------------------------


def test_a_near_cache_is_a_lease_backend_only_when_its_remote_is(
    momento: MomentoStandIn,
) -> None:
    leasing = NearCacheBackend(MomentoBackend.from_url(momento.url(TEST_CACHE)))
    assert isinstance(leasing, LeaseBackend)
    assert isinstance(leasing, NearCacheBackend)
    plain = NearCacheBackend(_BytesOnly())
    assert not isinstance(plain, LeaseBackend)
    assert not hasattr(plain, "add")
    assert repr(leasing).startswith("NearCacheBackend(MomentoBackend(")


def test_a_subclass_of_the_near_cache_is_kept(momento: MomentoStandIn) -> None:
    class Custom(NearCacheBackend):
        __slots__ = ()

    built = Custom(MomentoBackend.from_url(momento.url(TEST_CACHE)), local_ttl=2)
    assert type(built) is Custom
    assert built.local_ttl == 2


async def test_near_cache_add_drops_the_local_copy(
    near_momento_backend: NearCacheBackend, momento: MomentoStandIn
) -> None:
    now = time.time()
    await near_momento_backend.set("k", Entry(b"\x01v", now + 60, now + 60, now + 60))
    assert near_momento_backend.peek("k") is not None
    add: Callable[..., Any] = near_momento_backend.add  # type: ignore[attr-defined]
    assert await add("k", b"lease", 30) is False
    assert near_momento_backend.peek("k") is None
    assert momento.count("SetIfNotExists") == 1


async def test_a_cache_over_a_near_cache_takes_its_leases_in_the_remote(
    momento: MomentoStandIn,
) -> None:
    near = NearCacheBackend(MomentoBackend.from_url(momento.url(TEST_CACHE)), local_ttl=30)
    async with Cache(near, lease_wait=2) as cache:
        assert await cache.get_or_load("k", _loaded) == "loaded"
    calls = momento.calls()
    assert calls["SetIfNotExists"] == 1
    assert calls["Delete"] == 1  # the lease, given back
    assert not [name for name in momento.items(TEST_CACHE) if "__polycache_lease__" in name]


async def test_a_cache_over_a_near_cache_of_a_plain_remote_loads_without_leases() -> None:
    remote = _BytesOnly()
    async with Cache(NearCacheBackend(remote), lease_wait=2) as cache:
        assert await cache.get_or_load("k", _loaded) == "loaded"
    assert list(remote.entries) == ["k"]
    assert remote.deleted == []


async def _loaded() -> str:
    return "loaded"


class _BytesOnly:
    """A remote backend without leases (no `add`)."""

    stores_objects = False
    max_item_bytes = None

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.deleted: list[str] = []

    async def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    async def set(self, key: str, entry: Entry) -> None:
        self.entries[key] = entry

    async def delete(self, key: str) -> None:
        self.deleted.append(key)
        self.entries.pop(key, None)

    async def aclose(self) -> None:
        return None
