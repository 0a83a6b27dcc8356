"""Several OS processes share one redis-server: a write in one reaches every near-cache."""

from __future__ import annotations

import pytest

from tests.fleet.processes import DELAY_GOAL, Spawn, hear, wait_seen
from tests.stand_ins.redis_server import RedisServer

pytestmark = pytest.mark.redis

CHANNEL = "polycache:invalidations"


@pytest.fixture
def spawn(redis_spawn: Spawn) -> Spawn:
    """Worker processes on this module's redis-server (tests/fleet/conftest.py)."""
    return redis_spawn


def gets(server: RedisServer) -> int:
    """How many GETs the server has answered."""
    stats = server.client().info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


def test_while_subscribed_a_copy_outlives_local_ttl_and_a_killed_subscription_ends_that(
    spawn: Spawn, fleet_redis: RedisServer
) -> None:
    local_ttl = 0.3
    writer, reader = spawn(), spawn(local_ttl=local_ttl)
    writer.call("set", key="k", value="v1")
    hear(reader, "k")
    assert reader.call("get", key="k")["value"] == "v1"
    reader.call("wait_for", key="never", value="x", timeout=local_ttl * 2)  # time passes
    before = gets(fleet_redis)
    assert reader.call("get", key="k")["value"] == "v1"
    assert gets(fleet_redis) == before  # trusted past local_ttl: nobody announced a change
    # The server drops every subscription; the channel subscribes again by itself, and the
    # copy held from before is not trusted now.
    session = reader.call("state")["session"]
    assert fleet_redis.client().client_kill_filter(_type="pubsub") == 2
    assert reader.call("wait_connected", timeout=10.0, newer_than=session) == {"connected": True}
    before = gets(fleet_redis)
    assert reader.call("get", key="k")["value"] == "v1"
    assert gets(fleet_redis) == before + 1


def test_with_the_channel_down_a_copy_lives_at_most_local_ttl(
    spawn: Spawn, fleet_redis: RedisServer
) -> None:
    local_ttl = 1.0
    writer, reader = spawn(), spawn(local_ttl=local_ttl)
    writer.call("set", key="k", value="v1")
    client = fleet_redis.client()
    # Killed, and kept from subscribing again.
    client.acl_setuser("default", enabled=True, nopass=True, commands=["+@all", "-subscribe"])
    assert client.client_kill_filter(_type="pubsub") == 2
    state = reader.call("state")
    for _ in range(100):
        if not state["connected"]:
            break
        state = reader.call("state")
    assert not state["connected"]
    heard = len(state["remote_invalidations"])
    held = reader.call("get", key="k")
    assert held["value"] == "v1"
    writer.call("set", key="k", value="v2")
    # Unheard: the old copy is still answered, until its local_ttl runs out.
    assert reader.call("get", key="k")["value"] == "v1"
    seen = reader.call("wait_for", key="k", value="v2", timeout=local_ttl + 2)
    assert seen["seen"], seen
    assert float(seen["at"]) - float(held["at"]) <= local_ttl + 0.2
    assert len(reader.call("state")["remote_invalidations"]) == heard
    # The channel comes back by itself.
    client.acl_setuser("default", enabled=True, nopass=True, commands=["+@all"])
    assert reader.call("wait_connected", timeout=10.0) == {"connected": True}
    assert writer.call("wait_connected", timeout=10.0) == {"connected": True}
    delay, seen = wait_seen(writer, reader, "set", "k", value="v3")
    assert seen["seen"] and delay < DELAY_GOAL, seen


def test_a_new_event_loop_keeps_receiving(spawn: Spawn, fleet_redis: RedisServer) -> None:
    writer, reader = spawn(), spawn()
    writer.call("set", key="k", value="v1")
    assert reader.call("get", key="k")["value"] == "v1"
    for round_number in range(2, 4):
        assert reader.call("new_loop")["loops"] == round_number - 1
        assert reader.call("wait_connected", timeout=10.0) == {"connected": True}
        delay, seen = wait_seen(writer, reader, "set", "k", value=f"v{round_number}")
        assert seen["seen"], seen
        assert delay < DELAY_GOAL
    # The old loops' subscriptions (and their connections) ended with them.
    counts = dict(fleet_redis.client().pubsub_numsub(CHANNEL))
    assert counts[CHANNEL.encode()] == 2


def test_a_write_just_before_the_loop_ends_is_still_announced(spawn: Spawn) -> None:
    writer, reader = spawn(), spawn()
    writer.call("set", key="k", value="v1")
    hear(reader, "k")
    assert reader.call("get", key="k")["value"] == "v1"
    reader.send("wait_for", key="k", value="v2", timeout=5.0)
    # The writer's asyncio.run returns right after its set, as a Lambda handler's would.
    written = writer.call("set", key="k", value="v2", then_new_loop=True)
    seen = reader.reply()
    assert seen["seen"], seen
    assert float(seen["at"]) - float(written["at"]) < DELAY_GOAL
