"""`RedisPubSub`, the push transport of `redis://`, against real redis-server processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

import polycache.backends.redis as redis_module
from polycache import BackendError, BackendTimeout, LeaseBackend
from polycache._contracts import PushBackend, PushSubscription, PushTransport
from polycache.backends._invalidation import InvalidationChannel
from polycache.backends.near import NearCacheBackend
from polycache.backends.redis import RedisBackend, RedisPubSub
from tests.stand_ins.redis_server import RedisCluster, RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
async def transport(redis_backend: RedisBackend) -> AsyncIterator[RedisPubSub]:
    pubsub = redis_backend.push_transport()
    yield pubsub
    await pubsub.aclose()


def subscribers(server: RedisServer, channel: str = "polycache:invalidations") -> int:
    counts = dict(server.client().pubsub_numsub(channel))
    return int(counts[channel.encode()])


async def next_message(subscription: PushSubscription) -> bytes:
    """The next message, skipping heartbeats (at most 5 s)."""
    async with asyncio.timeout(5):
        while (message := await subscription.receive()) is None:
            pass
        return message


async def eventually(check: Callable[[], bool]) -> bool:
    """Whether `check()` comes true within 3 s (the server notices a close a bit later)."""
    deadline = time.monotonic() + 3
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def until_it_ends(subscription: PushSubscription) -> None:
    """Receive until the subscription raises (at most 5 s)."""
    async with asyncio.timeout(5):
        while True:
            await subscription.receive()


def test_the_backend_is_a_push_and_lease_backend(redis_backend: RedisBackend) -> None:
    assert isinstance(redis_backend, PushBackend)
    assert isinstance(redis_backend, LeaseBackend)
    transport = redis_backend.push_transport()
    assert isinstance(transport, PushTransport)
    assert transport.channel == "polycache:invalidations"
    assert repr(transport).startswith("RedisPubSub('127.0.0.1:")


def test_the_channel_is_named_after_the_key_prefix(redis_server: RedisServer) -> None:
    backend = RedisBackend.from_url(redis_server.url + "?key_prefix=app1:", environ={})
    assert backend.push_transport().channel == "app1:invalidations"


async def test_subscribe_returns_once_the_server_counts_the_subscriber(
    transport: RedisPubSub, redis_server: RedisServer
) -> None:
    assert not transport.connected()
    subscription = await transport.subscribe()
    assert transport.connected()
    # Confirmed: a PUBLISH made now, from anywhere, is delivered.
    assert subscribers(redis_server) == 1
    assert redis_server.client().publish("polycache:invalidations", b"from-outside") == 1
    assert await next_message(subscription) == b"from-outside"
    await subscription.aclose()
    assert await eventually(lambda: subscribers(redis_server) == 0)  # its connection closed


async def test_publish_reaches_every_subscriber_in_order(
    redis_backend: RedisBackend, redis_server: RedisServer
) -> None:
    one, two = redis_backend.push_transport(), redis_backend.push_transport()
    first, second = await one.subscribe(), await two.subscribe()
    for number in range(5):
        await one.publish(b"m%d" % number)
    for subscription in (first, second):
        assert [await next_message(subscription) for _ in range(5)] == [
            b"m0",
            b"m1",
            b"m2",
            b"m3",
            b"m4",
        ]
    for subscription in (first, second):
        await subscription.aclose()
    await one.aclose()
    await two.aclose()


async def test_a_killed_subscription_raises_and_a_new_one_works(
    transport: RedisPubSub, redis_server: RedisServer
) -> None:
    subscription = await transport.subscribe()
    assert redis_server.client().client_kill_filter(_type="pubsub") == 1
    with pytest.raises(BackendError, match=r"Redis pub/sub read on 127\.0\.0\.1:"):
        await next_message(subscription)
    with pytest.raises(BackendError, match="has ended"):
        await subscription.receive()
    await subscription.aclose()
    again = await transport.subscribe()
    await transport.publish(b"after")
    assert await next_message(again) == b"after"
    await again.aclose()


async def test_a_quiet_subscription_pings_and_a_silent_server_ends_it(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_module, "_TICK", 0.1)
    monkeypatch.setattr(redis_module, "PING_INTERVAL", 0.3)
    monkeypatch.setattr(redis_module, "PING_TIMEOUT", 0.5)
    backend = RedisBackend.from_url(own_redis.url, environ={})
    transport = backend.push_transport()
    subscription = await transport.subscribe()
    # Quiet but alive: heartbeats only, and the PINGs are answered.
    started = time.monotonic()
    while time.monotonic() - started < 1.2:
        assert await subscription.receive() is None
    pings = own_redis.client().info("commandstats")["cmdstat_ping"]["calls"]
    assert pings >= 2
    own_redis.pause()
    try:
        started = time.monotonic()
        with pytest.raises(BackendTimeout, match="did not answer a subscription's PING"):
            await until_it_ends(subscription)
        # At most PING_INTERVAL + PING_TIMEOUT, each rounded up to a tick.
        assert time.monotonic() - started < 1.5
    finally:
        own_redis.resume()
    await subscription.aclose()
    await transport.aclose()
    await backend.aclose()


async def test_subscribe_to_a_dead_server_is_a_backend_error(own_redis: RedisServer) -> None:
    backend = RedisBackend.from_url(own_redis.url, environ={})
    own_redis.kill()
    transport = backend.push_transport()
    with pytest.raises(BackendError, match=r"Redis SUBSCRIBE on 127\.0\.0\.1:"):
        await transport.subscribe()
    with pytest.raises(BackendError, match=r"Redis PUBLISH on 127\.0\.0\.1:"):
        await transport.publish(b"x")
    await transport.aclose()


async def test_refused_subscribe_is_a_backend_error(own_redis: RedisServer) -> None:
    own_redis.client().acl_setuser("default", enabled=True, commands=["-subscribe"])
    backend = RedisBackend.from_url(own_redis.url, environ={})
    transport = backend.push_transport()
    with pytest.raises(BackendError, match=r"NOPERM|permission"):
        await transport.subscribe()
    assert transport.connected()
    await transport.aclose()
    assert not transport.connected()


async def test_cluster_mode_hears_a_publish_made_on_another_node(
    redis_cluster: RedisCluster,
) -> None:
    # Each process names some node of the cluster; plain PUBLISH reaches every node.
    first = RedisBackend.from_url(redis_cluster.url, environ={})
    other = redis_cluster.nodes[2]
    second = RedisBackend.from_url(f"redis://127.0.0.1:{other.port}?cluster=1", environ={})
    listening, talking = first.push_transport(), second.push_transport()
    subscription = await listening.subscribe()
    await talking.publish(b"across the cluster")
    assert await next_message(subscription) == b"across the cluster"
    await subscription.aclose()
    for closing in (listening, talking, first, second):
        await closing.aclose()


async def test_a_near_cache_on_redis_hears_another_near_cache(redis_server: RedisServer) -> None:
    heard: list[tuple[str, ...] | None] = []
    sessions: list[int] = []
    backend = RedisBackend.from_url(redis_server.url, environ={})
    channel = InvalidationChannel(
        backend.push_transport(), invalidate=heard.append, on_session=sessions.append
    )
    await channel.listen()
    assert await eventually(lambda: channel.connected)
    writer = NearCacheBackend(RedisBackend.from_url(redis_server.url, environ={}))
    assert writer.channel is not None
    writer.channel.publish(["a", "b"])
    await writer.channel.flush()
    assert await eventually(lambda: bool(heard))
    assert heard == [("a", "b")]
    await writer.aclose()
    await channel.aclose()
    await backend.aclose()
    assert sessions == [1, 0]
