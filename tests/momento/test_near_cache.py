"""The near-cache: hot keys answered in process, never past their freshness or local_ttl."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from polycache import Backend, BackendError, Cache, ConfigurationError, Entry
from polycache._observe import BaseObserver, Observers
from polycache.backends._invalidation import DISCONNECTED, MAX_MESSAGE_BYTES, decode, encode
from polycache.backends.momento import MomentoBackend
from polycache.backends.near import NearCacheBackend
from tests.conftest import FakeClock
from tests.stand_ins.momento_fixtures import TEST_CACHE, connected
from tests.stand_ins.momento_server import MomentoStandIn


class RemoteDouble:
    """A remote backend in memory that counts calls and can fail its writes."""

    stores_objects = False
    max_item_bytes = 1000

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.entries: dict[str, Entry] = {}
        self.gets = 0
        self.fail_sets = False

    async def get(self, key: str) -> Entry | None:
        self.gets += 1
        entry = self.entries.get(key)
        return None if entry is None or entry.expires_at <= self.clock() else entry

    async def set(self, key: str, entry: Entry) -> None:
        if self.fail_sets:
            raise OSError("remote down")
        self.entries[key] = entry

    async def delete(self, key: str) -> None:
        self.entries.pop(key, None)

    async def aclose(self) -> None:
        pass


def entry_at(clock: FakeClock, value: bytes, *, fresh: float, stale: float = 0.0) -> Entry:
    now = clock()
    return Entry(value, now + fresh, now + fresh + stale, now + fresh + stale)


@pytest.fixture
def remote(clock: FakeClock) -> RemoteDouble:
    return RemoteDouble(clock)


def near(remote: Backend, clock: FakeClock, **options: float) -> NearCacheBackend:
    return NearCacheBackend(remote, clock=clock, **options)  # type: ignore[arg-type]


async def test_hits_cost_no_remote_call(remote: RemoteDouble, clock: FakeClock) -> None:
    backend = near(remote, clock, local_ttl=30)
    remote.entries["k"] = entry_at(clock, b"v", fresh=60)
    for _ in range(5):
        read = await backend.get("k")
        assert read is not None and read.value == b"v"
    assert remote.gets == 1
    assert backend.peek("k") is not None
    assert backend.peek("other") is None
    assert remote.gets == 1


async def test_never_served_locally_past_fresh_until(
    remote: RemoteDouble, clock: FakeClock
) -> None:
    backend = near(remote, clock, local_ttl=300)
    await backend.set("k", entry_at(clock, b"v", fresh=5, stale=100))
    clock.advance(4)
    assert await backend.get("k") is not None
    assert remote.gets == 0
    clock.advance(2)  # stale now: the remote may hold a refresh another process stored
    remote.entries["k"] = entry_at(clock, b"refreshed", fresh=60)
    read = await backend.get("k")
    assert read is not None and read.value == b"refreshed"
    assert remote.gets == 1


async def test_held_at_most_local_ttl(remote: RemoteDouble, clock: FakeClock) -> None:
    backend = near(remote, clock, local_ttl=2)
    await backend.set("k", entry_at(clock, b"mine", fresh=600))
    remote.entries["k"] = entry_at(clock, b"another process", fresh=600)
    read = await backend.get("k")
    assert read is not None and read.value == b"mine"
    clock.advance(2.5)
    read = await backend.get("k")
    assert read is not None and read.value == b"another process"


async def test_expired_entries_are_not_held(remote: RemoteDouble, clock: FakeClock) -> None:
    backend = near(remote, clock, local_ttl=60)
    await backend.set("k", entry_at(clock, b"v", fresh=0))
    assert len(backend) == 0


async def test_bounded_by_local_max_entries(remote: RemoteDouble, clock: FakeClock) -> None:
    backend = NearCacheBackend(remote, local_max_entries=2, local_ttl=60, clock=clock)
    for key in ("a", "b", "c"):
        await backend.set(key, entry_at(clock, key.encode(), fresh=60))
    assert len(backend) == 2
    await backend.get("a")  # evicted first, so it costs a remote read
    assert remote.gets == 1
    await backend.get("c")
    assert remote.gets == 1


async def test_delete_and_failed_writes_drop_the_local_copy(
    remote: RemoteDouble, clock: FakeClock
) -> None:
    backend = near(remote, clock, local_ttl=60)
    await backend.set("k", entry_at(clock, b"old", fresh=60))
    remote.fail_sets = True
    with pytest.raises(OSError, match="remote down"):
        await backend.set("k", entry_at(clock, b"new", fresh=60))
    assert len(backend) == 0
    remote.fail_sets = False
    await backend.delete("k")
    assert await backend.get("k") is None


async def test_stale_while_revalidate_goes_through_the_remote(
    remote: RemoteDouble, clock: FakeClock
) -> None:
    cache = Cache(near(remote, clock, local_ttl=60), ttl=10, stale_ttl=100, clock=clock)
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        return loads

    assert await cache.get_or_load("k", load) == 1
    clock.advance(11)
    assert await cache.get_or_load("k", load) == 1  # stale: served, one refresh started
    await cache.aclose()  # let the refresh finish or be cancelled; either way it was started
    assert loads >= 1
    assert remote.gets >= 2


def test_options_for_memory_are_an_error() -> None:
    with pytest.raises(ConfigurationError, match="already keeps entries in process"):
        Cache("memory://?local_ttl=5")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("local_ttl=0", "local_ttl"),
        ("local_ttl=-1", "local_ttl"),
        ("local_max_entries=0", "local_max_entries"),
        ("local_max_entries=many", "local_max_entries"),
        ("local_ttl=1&local_ttl=2", "twice"),
    ],
)
def test_bad_near_options(query: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Cache(f"momento://c?endpoint=127.0.0.1:9&{query}")


def test_url_options_wrap_the_remote_backend() -> None:
    cache = Cache("momento://c?local_max_entries=7&endpoint=127.0.0.1:9&local_ttl=1.5")
    backend = cache.backend
    assert isinstance(backend, NearCacheBackend)
    assert backend.local_max_entries == 7
    assert backend.local_ttl == 1.5
    assert isinstance(backend.remote, MomentoBackend)
    assert backend.max_item_bytes == backend.remote.max_item_bytes
    assert "NearCacheBackend(MomentoBackend(cache_name='c'" in repr(cache)


@pytest.mark.momento
async def test_near_hits_over_momento_cost_no_round_trip(momento: MomentoStandIn) -> None:
    url = momento.url(TEST_CACHE, local_max_entries=100, local_ttl=30)
    writer, reader = Cache(url), Cache(url)
    await connected(writer, momento)
    await connected(reader, momento)
    await writer.set("hot", {"n": 1})
    for _ in range(10):
        assert await writer.get("hot") == {"n": 1}
    assert momento.calls()["Get"] == 0
    for _ in range(10):
        assert await reader.get("hot") == {"n": 1}
    assert momento.calls()["Get"] == 1
    await writer.aclose()
    await reader.aclose()


@pytest.mark.momento
async def test_near_cache_over_momento_respects_freshness(momento: MomentoStandIn) -> None:
    cache = Cache(momento.url(TEST_CACHE, local_ttl=30), ttl=0.2)
    await connected(cache, momento)
    await cache.set("k", "v")
    assert await cache.get("k") == "v"
    assert momento.calls()["Get"] == 0
    import asyncio

    await asyncio.sleep(0.3)
    assert await cache.get("k") is None  # expired: the remote was asked, and it agrees
    assert momento.calls()["Get"] == 1
    await cache.aclose()


async def test_bulk_operations_without_a_batch_remote(
    remote: RemoteDouble, clock: FakeClock
) -> None:
    backend = near(remote, clock, local_ttl=30)
    await backend.set_many(
        {"a": entry_at(clock, b"a", fresh=60), "b": entry_at(clock, b"b", fresh=60)}
    )
    assert set(remote.entries) == {"a", "b"}
    remote.entries["c"] = entry_at(clock, b"c", fresh=60)
    read = await backend.get_many(["a", "c", "missing", "b"])
    assert [item.value if item else None for item in read] == [b"a", b"c", None, b"b"]
    assert remote.gets == 2  # c and missing; a and b were held
    await backend.get_many(["c"])
    assert remote.gets == 2
    await backend.delete_many(["a", "c"])
    assert set(remote.entries) == {"b"}
    assert backend.peek("a") is None and backend.peek("c") is None


async def test_clear_needs_a_clearable_remote(remote: RemoteDouble, clock: FakeClock) -> None:
    backend = near(remote, clock, local_ttl=30)
    await backend.set("k", entry_at(clock, b"v", fresh=60))
    with pytest.raises(ConfigurationError, match="RemoteDouble cannot clear"):
        await backend.clear()
    assert backend.peek("k") is not None  # nothing was forgotten half-way


# -- invalidation across processes, with an in-memory push transport -------------------------


class Bus:
    """A push transport in memory: every subscription of every channel hears every message."""

    def __init__(self) -> None:
        self.subscriptions: list[BusSubscription] = []
        self.published: list[bytes] = []
        self.subscribes = 0
        self.refuse = False
        self.publish_delay = 0.0
        self.fail_publish = False
        self.closes = 0

    async def publish(self, message: bytes) -> None:
        if self.publish_delay:
            await asyncio.sleep(self.publish_delay)
        if self.fail_publish:
            raise BackendError("bus down")
        self.published.append(message)
        for subscription in self.subscriptions:
            subscription.queue.put_nowait(message)

    def connected(self) -> bool:
        return True

    async def subscribe(self) -> BusSubscription:
        self.subscribes += 1
        if self.refuse:
            raise BackendError("bus refuses")
        subscription = BusSubscription(self)
        self.subscriptions.append(subscription)
        return subscription

    def drop(self) -> None:
        for subscription in self.subscriptions:
            subscription.queue.put_nowait(None)

    async def aclose(self) -> None:
        self.closes += 1


class BusSubscription:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def receive(self) -> bytes | None:
        message = await self.queue.get()
        if message is None:
            raise BackendError("dropped")
        return message

    async def aclose(self) -> None:
        if self in self.bus.subscriptions:
            self.bus.subscriptions.remove(self)


class PushRemote(RemoteDouble):
    """The remote double, shared by several near-caches, with a push channel."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.bus = Bus()
        self.cleared_elsewhere_calls = 0

    def push_transport(self) -> Bus:
        return self.bus

    async def cleared_elsewhere(self) -> None:
        self.cleared_elsewhere_calls += 1

    async def clear(self) -> None:
        self.entries.clear()


class Recorder(BaseObserver):
    def __init__(self) -> None:
        self.invalidations: list[tuple[tuple[str, ...], str]] = []

    def invalidation(self, keys: Sequence[str], reason: str) -> None:
        self.invalidations.append((tuple(keys), reason))


@pytest.fixture
def pushing(clock: FakeClock) -> PushRemote:
    return PushRemote(clock)


async def subscribed(*backends: NearCacheBackend) -> None:
    for backend in backends:
        channel = backend.channel
        assert channel is not None
        await channel.listen()
        async with asyncio.timeout(5):
            while not channel.connected:  # noqa: ASYNC110 - the test polls the state
                await asyncio.sleep(0.001)


async def settle(*backends: NearCacheBackend) -> None:
    """Let every published message be sent and handed over."""
    for backend in backends:
        assert backend.channel is not None
        await backend.channel.flush()
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_write_drops_the_copies_of_other_processes(
    pushing: PushRemote, clock: FakeClock
) -> None:
    first, second = near(pushing, clock, local_ttl=5), near(pushing, clock, local_ttl=5)
    recorder = Recorder()
    second.observers = Observers([recorder])
    await subscribed(first, second)
    await first.set("k", entry_at(clock, b"v1", fresh=60))
    await settle(first)
    assert (await second.get("k")) == pushing.entries["k"]
    await first.set("k", entry_at(clock, b"v2", fresh=60))
    await settle(first, second)
    assert second.peek("k") is None
    read = await second.get("k")
    assert read is not None and read.value == b"v2"
    await first.delete("k")
    await settle(first, second)
    assert second.peek("k") is None and await second.get("k") is None
    assert recorder.invalidations[-1] == (("k",), "remote")
    # Its own messages are skipped: the writer keeps the copy it wrote.
    await first.set("mine", entry_at(clock, b"v", fresh=60))
    await settle(first, second)
    assert first.peek("mine") is not None
    assert all(b'"mine"' in message for message in pushing.bus.published[-1:])


async def test_while_subscribed_copies_are_trusted_to_their_freshness(
    pushing: PushRemote, clock: FakeClock
) -> None:
    backend = near(pushing, clock, local_ttl=5)
    await subscribed(backend)
    pushing.entries["k"] = entry_at(clock, b"v", fresh=60)
    await backend.get("k")
    clock.advance(30)
    assert backend.peek("k") is not None  # past local_ttl, within freshness
    assert pushing.gets == 1
    clock.advance(31)
    assert backend.peek("k") is None  # never past freshness


async def test_after_a_gap_copies_from_before_live_at_most_local_ttl(
    pushing: PushRemote, clock: FakeClock
) -> None:
    backend = near(pushing, clock, local_ttl=5)
    await subscribed(backend)
    pushing.entries["k"] = entry_at(clock, b"v", fresh=60)
    await backend.get("k")
    assert backend.channel is not None
    before = backend.channel.session
    pushing.bus.drop()
    async with asyncio.timeout(5):
        while backend.channel.session in (before, DISCONNECTED):  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    clock.advance(4)
    assert backend.peek("k") is not None  # within local_ttl
    clock.advance(2)
    assert backend.peek("k") is None  # held in the old session: local_ttl only
    await backend.get("k")
    clock.advance(30)
    assert backend.peek("k") is not None  # read in the new session: trusted again


async def test_without_a_subscription_copies_live_at_most_local_ttl(
    pushing: PushRemote, clock: FakeClock
) -> None:
    pushing.bus.refuse = True
    backend = near(pushing, clock, local_ttl=5)
    assert backend.channel is not None
    await backend.channel.listen()
    async with asyncio.timeout(5):
        while pushing.bus.subscribes < 3:  # noqa: ASYNC110 - retried with backoff
            await asyncio.sleep(0.005)
    assert not backend.channel.connected
    pushing.entries["k"] = entry_at(clock, b"v", fresh=60)
    await backend.get("k")
    clock.advance(6)
    assert backend.peek("k") is None
    pushing.bus.refuse = False
    await subscribed(backend)  # it keeps trying by itself


async def test_without_a_push_remote_there_is_no_channel(
    remote: RemoteDouble, clock: FakeClock
) -> None:
    assert near(remote, clock).channel is None
    assert near(PushRemote(clock), clock, invalidation=False).channel is None


async def test_publishing_never_delays_the_writer_and_failures_are_counted(
    pushing: PushRemote, clock: FakeClock
) -> None:
    backend = near(pushing, clock, local_ttl=5)
    await subscribed(backend)
    pushing.bus.publish_delay = 30
    async with asyncio.timeout(0.5):
        await backend.set("k", entry_at(clock, b"v", fresh=60))
    assert backend.channel is not None
    async with asyncio.timeout(3):  # bounded by publish_timeout (1 s)
        await backend.channel.flush()
    assert backend.channel.publish_failures == 1
    pushing.bus.publish_delay = 0
    pushing.bus.fail_publish = True
    await backend.delete("k")
    await backend.channel.flush()
    assert backend.channel.publish_failures == 2


async def test_a_failed_write_is_announced_too(pushing: PushRemote, clock: FakeClock) -> None:
    backend = near(pushing, clock)
    await subscribed(backend)
    pushing.fail_sets = True
    with pytest.raises(OSError, match="remote down"):
        await backend.set("k", entry_at(clock, b"v", fresh=60))
    await settle(backend)
    assert decode(pushing.bus.published[-1])[1] == ("k",)  # type: ignore[index]


async def test_bursts_share_messages_and_bulk_writes_announce_every_key(
    pushing: PushRemote, clock: FakeClock
) -> None:
    first, second = near(pushing, clock), near(pushing, clock)
    await subscribed(first, second)
    await asyncio.gather(*(first.set(f"k{i}", entry_at(clock, b"v", fresh=60)) for i in range(20)))
    await settle(first)
    assert len(pushing.bus.published) < 20
    await second.get_many([f"k{i}" for i in range(20)])
    assert len(second) == 20
    await first.delete_many([f"k{i}" for i in range(10)])
    await settle(first, second)
    assert len(second) == 10


async def test_a_remote_clear_drops_everything_and_catches_the_remote_up(
    pushing: PushRemote, clock: FakeClock
) -> None:
    first, second = near(pushing, clock), near(pushing, clock)
    recorder = Recorder()
    second.observers = Observers([recorder])
    await subscribed(first, second)
    pushing.entries["k"] = entry_at(clock, b"v", fresh=60)
    await second.get("k")
    await first.clear()
    await settle(first, second)
    assert len(second) == 0
    assert recorder.invalidations == [(("*",), "remote")]
    await second.get("k")
    assert pushing.cleared_elsewhere_calls == 1


async def test_an_unreadable_message_drops_everything(
    pushing: PushRemote, clock: FakeClock
) -> None:
    backend = near(pushing, clock)
    await subscribed(backend)
    await backend.set("k", entry_at(clock, b"v", fresh=60))
    await pushing.bus.publish(b"\xffnot json")
    await settle(backend)
    assert len(backend) == 0


async def test_a_read_overlapping_a_message_is_returned_but_not_held(
    pushing: PushRemote, clock: FakeClock
) -> None:
    first, second = near(pushing, clock), near(pushing, clock)
    await subscribed(first, second)
    pushing.entries["k"] = entry_at(clock, b"old", fresh=60)
    started = asyncio.Event()
    release = asyncio.Event()
    original_get = pushing.get

    async def slow_get(key: str) -> Entry | None:
        entry = await original_get(key)
        started.set()
        await release.wait()
        return entry

    pushing.get = slow_get  # type: ignore[method-assign]
    reading = asyncio.ensure_future(second.get("k"))
    await started.wait()
    await first.set("k", entry_at(clock, b"new", fresh=60))
    await settle(first, second)
    release.set()
    read = await reading
    assert read is not None and read.value == b"old"
    assert second.peek("k") is None


def test_messages_are_split_below_the_size_limit_and_read_back() -> None:
    keys = [f"key-{index:05d}-" + "x" * 100 for index in range(1000)]
    messages = encode("origin", keys)
    assert len(messages) > 1
    assert all(len(message) <= MAX_MESSAGE_BYTES for message in messages)
    read: list[str] = []
    for message in messages:
        decoded = decode(message)
        assert decoded is not None and decoded[0] == "origin" and decoded[1] is not None
        read.extend(decoded[1])
    assert read == keys
    assert decode(encode("o", None)[0]) == ("o", None)
    for bad in (b"[]", b'{"origin": 1}', b'{"origin": "o", "keys": [1]}', b"\x00"):
        assert decode(bad) is None


def test_each_event_loop_subscribes_anew(clock: FakeClock) -> None:
    pushing = PushRemote(clock)
    backend = near(pushing, clock)
    channel = backend.channel
    assert channel is not None
    sessions = []
    for _ in range(3):

        async def invocation() -> None:
            await subscribed(backend)
            sessions.append(channel.session)

        asyncio.run(invocation())
        assert not channel.connected  # the loop's end ended the subscription
        assert pushing.bus.subscriptions == []
    assert pushing.bus.subscribes == 3
    assert len(set(sessions)) == 3


def test_a_write_right_before_the_loop_ends_is_announced(clock: FakeClock) -> None:
    pushing = PushRemote(clock)
    backend = near(pushing, clock)

    async def invocation(key: str) -> None:
        await subscribed(backend)
        pushing.bus.publish_delay = 0.05  # still in flight when the handler returns
        await backend.set(key, entry_at(clock, b"v", fresh=60))

    asyncio.run(invocation("last"))
    assert [decode(message) for message in pushing.bus.published][-1:] == [
        (backend.channel.origin, ("last",))  # type: ignore[union-attr]
    ]


def test_loop_after_loop_over_momento_leaves_nothing_behind(
    momento: MomentoStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """Each loop subscribes anew; its subscription ends with it, and leaves gRPC no events."""
    backend = NearCacheBackend(MomentoBackend.from_url(momento.url(TEST_CACHE)), local_ttl=30)
    channel = backend.channel
    assert channel is not None

    async def invocation(close: bool) -> None:
        await backend.set("k", Entry(b"v", 2e9, 2e9, 2e9))
        async with asyncio.timeout(10):
            while not channel.connected:  # noqa: ASYNC110 - the test polls the state
                await asyncio.sleep(0.001)
        if close:
            await backend.aclose()

    async def other_traffic() -> None:
        # Another loop's gRPC work: where a stream event left for a closed loop would surface.
        other = MomentoBackend.from_url(momento.url(TEST_CACHE))
        for _ in range(50):
            await other.get("k")
        await other.aclose()

    with caplog.at_level("ERROR", logger="asyncio"):
        for close in (True, False) * 4:
            asyncio.run(invocation(close))
            asyncio.run(other_traffic())
    assert momento.calls()["Subscribe"] == 8
    assert not [record for record in caplog.records if "closed" in str(record.exc_info)]
    for _ in range(200):
        if momento.subscribers() == 0:
            break
        time.sleep(0.01)
    assert momento.subscribers() == 0
