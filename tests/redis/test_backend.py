"""The Redis backend against real servers: what it stores, batches, clears, TLS and ACL users."""

from __future__ import annotations

import asyncio
import time

import pytest

from polycache import BackendError, Cache, Entry
from polycache.backends.near import NearCacheBackend
from polycache.backends.redis import RedisBackend
from tests.stand_ins.redis_fixtures import ACL_PASSWORD
from tests.stand_ins.redis_server import RedisCluster, RedisServer, TlsFiles

pytestmark = pytest.mark.redis


def entry(value: bytes, ttl: float = 60.0, keep: float = 0.0) -> Entry:
    now = time.time()
    return Entry(value, now + ttl, now + ttl, now + ttl + keep)


async def test_set_uses_px_until_expires_at_under_the_prefix(
    redis_server: RedisServer, redis_backend: RedisBackend
) -> None:
    await redis_backend.set("k", entry(b"v", ttl=30, keep=90))
    raw = redis_server.client()
    assert raw.keys() == [b"polycache:k"]
    assert 119_000 < raw.pttl("polycache:k") <= 120_000


async def test_an_already_expired_entry_is_not_kept(
    redis_server: RedisServer, redis_backend: RedisBackend
) -> None:
    await redis_backend.set("k", entry(b"v"))
    await redis_backend.set("k", entry(b"v", ttl=-1))
    assert redis_server.client().exists("polycache:k") == 0
    await redis_backend.set_many({"a": entry(b"a", ttl=-1), "b": entry(b"b")})
    assert redis_server.client().keys() == [b"polycache:b"]


async def test_an_entry_that_never_expires_has_no_ttl(
    redis_server: RedisServer, redis_backend: RedisBackend
) -> None:
    now = time.time()
    await redis_backend.set("forever", Entry(b"v", now + 60, now + 60, float("inf")))
    assert redis_server.client().pttl("polycache:forever") == -1
    read = await redis_backend.get("forever")
    assert read is not None and read.expires_at == float("inf")


async def test_foreign_bytes_under_the_prefix_are_a_serialization_error(
    redis_server: RedisServer, redis_backend: RedisBackend
) -> None:
    from polycache import SerializationError

    redis_server.client().set("polycache:foreign", b"not an envelope")
    with pytest.raises(SerializationError, match="not a polycache entry"):
        await redis_backend.get("foreign")


async def test_batches_round_trip_with_their_own_ttls(
    redis_server: RedisServer, redis_backend: RedisBackend
) -> None:
    await redis_backend.set_many(
        {f"k{index}": entry(b"%d" % index, ttl=10 + index) for index in range(5)}
    )
    raw = redis_server.client()
    assert 13_000 < raw.pttl("polycache:k4") <= 14_000
    assert 9_000 < raw.pttl("polycache:k0") <= 10_000
    read = await redis_backend.get_many(["k0", "missing", "k4"])
    assert [item.value if item else None for item in read] == [b"0", None, b"4"]
    await redis_backend.delete_many(["k0", "k1", "missing"])
    assert sorted(raw.keys()) == [b"polycache:k2", b"polycache:k3", b"polycache:k4"]
    assert await redis_backend.get_many([]) == []
    await redis_backend.set_many({})
    await redis_backend.delete_many([])


@pytest.mark.parametrize("prefix", ["polycache:", "a*[b]?\\:"])
async def test_clear_forgets_only_keys_under_the_prefix(
    redis_server: RedisServer, prefix: str
) -> None:
    from urllib.parse import quote

    backend = RedisBackend.from_url(f"{redis_server.url}?key_prefix={quote(prefix)}", environ={})
    raw = redis_server.client()
    raw.set("someone-else", b"x")
    raw.set("a-other:k", b"x")
    raw.set("polycache", b"no colon")
    await backend.set_many({f"k{index}": entry(b"v") for index in range(2500)})
    await backend.clear()
    assert sorted(raw.keys()) == [b"a-other:k", b"polycache", b"someone-else"]
    await backend.clear()
    await backend.aclose()


async def test_two_prefixes_share_a_server_without_seeing_each_other(
    redis_server: RedisServer,
) -> None:
    first = RedisBackend.from_url(f"{redis_server.url}?key_prefix=one:", environ={})
    second = RedisBackend.from_url(f"{redis_server.url}?key_prefix=two:", environ={})
    await first.set("k", entry(b"1"))
    assert await second.get("k") is None
    await second.clear()
    assert await first.get("k") is not None
    await first.aclose()
    await second.aclose()


async def test_database_number_is_selected(redis_server: RedisServer) -> None:
    backend = RedisBackend.from_url(redis_server.url.replace("/0", "/3"), environ={})
    await backend.set("k", entry(b"v"))
    assert redis_server.client(db=3).exists("polycache:k") == 1
    assert redis_server.client(db=0).exists("polycache:k") == 0
    await backend.aclose()


async def test_max_connections_bounds_the_pool(redis_server: RedisServer) -> None:
    backend = RedisBackend.from_url(f"{redis_server.url}?max_connections=2", environ={})
    cache = Cache(backend, fail_open=False, backend_timeout=5)
    await asyncio.gather(*(cache.set(f"k{index}", index) for index in range(20)))
    clients = redis_server.client().client_list()
    assert len(clients) <= 3  # two of ours and the inspecting one
    assert await cache.get("k19") == 19
    await cache.aclose()


async def test_cache_get_many_reads_through_the_backend(redis_backend: RedisBackend) -> None:
    cache = Cache(redis_backend, fail_open=False)
    await cache.set("a", 1, ttl=30)
    await cache.set("b", [2], ttl=30)
    assert await cache.get_many(["a", "b", "c"]) == {"a": 1, "b": [2], "c": None}


async def test_near_cache_in_front_of_redis(redis_server: RedisServer) -> None:
    cache = Cache(f"{redis_server.url}?local_max_entries=100&local_ttl=1")
    await cache.set("hot", {"v": 1}, ttl=60)
    other = Cache(redis_server.url)
    await other.set("hot", {"v": 2}, ttl=60)
    assert await cache.get("hot") == {"v": 1}  # answered locally within local_ttl
    await asyncio.sleep(1.1)
    assert await cache.get("hot") == {"v": 2}  # then read again from Redis
    await cache.aclose()
    await other.aclose()


def test_near_cache_url_wraps_the_backend(redis_server: RedisServer) -> None:
    from polycache._registry import backend_from_url

    backend = backend_from_url(
        f"redis://127.0.0.1:{redis_server.port}?local_max_entries=100&local_ttl=1"
    )
    assert isinstance(backend, NearCacheBackend)
    assert isinstance(backend.remote, RedisBackend)
    assert backend.local_max_entries == 100 and backend.local_ttl == 1.0


# -- TLS ---------------------------------------------------------------------------------------


async def test_tls_with_the_servers_ca(redis_tls_server: RedisServer) -> None:
    cache = Cache(redis_tls_server.url, fail_open=False)
    await cache.set("k", "over tls")
    assert await cache.get("k") == "over tls"
    await cache.aclose()


async def test_tls_without_the_ca_is_refused(redis_tls_server: RedisServer) -> None:
    cache = Cache(f"rediss://127.0.0.1:{redis_tls_server.port}", fail_open=False)
    with pytest.raises(BackendError, match="certificate verify failed"):
        await cache.get("k")
    await cache.aclose()


async def test_plaintext_to_a_tls_port_fails_as_a_backend_error(
    redis_tls_server: RedisServer,
) -> None:
    cache = Cache(f"redis://127.0.0.1:{redis_tls_server.port}", fail_open=False)
    with pytest.raises(BackendError, match=r"Redis GET on 127\.0\.0\.1"):
        await cache.get("k")
    await cache.aclose()


# -- ACL users -----------------------------------------------------------------------------------


async def test_acl_user_with_password(redis_acl_server: RedisServer) -> None:
    redis_acl_server.flush()
    cache = Cache(redis_acl_server.url, fail_open=False)
    await cache.set("k", "authenticated")
    assert await cache.get("k") == "authenticated"
    await cache.aclose()


@pytest.mark.parametrize("url_auth", ["polycache:wrong-pass-5521@", ""])
async def test_rejected_credentials_are_a_backend_error_without_the_password(
    redis_acl_server: RedisServer, url_auth: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://{url_auth}127.0.0.1:{redis_acl_server.port}"
    cache = Cache(url, fail_open=False)
    with pytest.raises(BackendError) as caught:
        await cache.get("k")
    message = str(caught.value)
    assert "WRONGPASS" in message or "NOAUTH" in message or "Authentication" in message
    assert "wrong-pass-5521" not in message and ACL_PASSWORD not in message
    open_cache = Cache(url)
    assert await open_cache.get("k", "fallback") == "fallback"
    assert not any("wrong-pass-5521" in record.getMessage() for record in caplog.records)
    assert "wrong-pass-5521" not in repr(cache)
    await cache.aclose()
    await open_cache.aclose()


async def test_cluster_clear_covers_every_node(redis_cluster: RedisCluster) -> None:
    import redis

    backend = RedisBackend.from_url(redis_cluster.url, environ={})
    await backend.set_many({f"k{index}": entry(b"v") for index in range(300)})
    others = [f"other:{index}" for index in range(30)]
    raw = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    for name in others:
        raw.set(name, b"x")
    for node in redis_cluster.nodes:
        assert node.client().dbsize() > 50  # the keys really are spread over the nodes
    await backend.clear()
    left = sorted(key for node in redis_cluster.nodes for key in node.client().scan_iter())
    assert left == sorted(name.encode() for name in others)
    raw.close()
    await backend.aclose()


async def test_cluster_get_many_across_slots_never_crossslot(
    redis_cluster: RedisCluster,
) -> None:
    backend = RedisBackend.from_url(redis_cluster.url, environ={})
    keys = [f"user:{index}" for index in range(100)] + ["{tag}a", "{tag}b"]
    await backend.set_many({key: entry(key.encode()) for key in keys[::2]})
    read = await backend.get_many(keys)
    assert [item.value if item else None for item in read] == [
        key.encode() if index % 2 == 0 else None for index, key in enumerate(keys)
    ]
    await backend.delete_many(keys)
    assert all(item is None for item in await backend.get_many(keys))
    await backend.aclose()


async def test_cluster_over_tls(redis_tls_files: TlsFiles) -> None:
    # ElastiCache Serverless: the cluster protocol, over TLS only.
    cluster = RedisCluster(tls=redis_tls_files).start()
    try:
        # Room for thirty TLS handshakes at once on a loaded machine: this tests TLS, not time.
        cache = Cache(cluster.url, fail_open=False, backend_timeout=10)
        keys = [f"k{index}" for index in range(30)]
        for key in keys:
            await cache.set(key, key)
        assert await cache.get_many(keys) == {key: key for key in keys}
        backend = RedisBackend.from_url(cluster.url, environ={})
        read = await backend.get_many(keys)
        assert all(item is not None for item in read)
        await backend.aclose()
        await cache.aclose()
    finally:
        cluster.stop()
