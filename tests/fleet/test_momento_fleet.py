"""Several OS processes share one Momento stand-in: a write in one reaches every near-cache."""

from __future__ import annotations

import pytest

from tests.fleet.processes import DELAY_GOAL, Spawn, hear, wait_seen
from tests.stand_ins.momento_server import MomentoStandIn

pytestmark = pytest.mark.momento


@pytest.fixture
def spawn(momento_spawn: Spawn) -> Spawn:
    """Worker processes on the Momento stand-in (tests/fleet/conftest.py)."""
    return momento_spawn


def test_with_the_channel_down_a_copy_lives_at_most_local_ttl(
    spawn: Spawn, momento: MomentoStandIn
) -> None:
    local_ttl = 1.0
    writer, reader = spawn(), spawn(local_ttl=local_ttl)
    writer.call("set", key="k", value="v1")
    momento.fault("UNAVAILABLE", methods=["Subscribe"])  # no resubscribing
    assert momento.drop_subscriptions() == 2
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
    momento.clear_faults()
    assert reader.call("wait_connected", timeout=10.0) == {"connected": True}
    delay, seen = wait_seen(writer, reader, "set", "k", value="v3")
    assert seen["seen"] and delay < DELAY_GOAL, seen


def test_while_subscribed_a_copy_outlives_local_ttl_and_resubscribing_ends_that(
    spawn: Spawn, momento: MomentoStandIn
) -> None:
    local_ttl = 0.3
    writer, reader = spawn(), spawn(local_ttl=local_ttl)
    writer.call("set", key="k", value="v1")
    hear(reader, "k")
    assert reader.call("get", key="k")["value"] == "v1"
    reader.call("wait_for", key="never", value="x", timeout=local_ttl * 2)  # time passes
    momento.clear_calls()
    assert reader.call("get", key="k")["value"] == "v1"
    assert momento.calls()["Get"] == 0  # trusted past local_ttl: nobody announced a change
    # The subscription drops and comes back: the copy held from before is not trusted now.
    session = reader.call("state")["session"]
    momento.drop_subscriptions()
    assert reader.call("wait_connected", timeout=10.0, newer_than=session) == {"connected": True}
    momento.clear_calls()
    assert reader.call("get", key="k")["value"] == "v1"
    assert momento.calls()["Get"] == 1


def test_a_new_event_loop_keeps_receiving(spawn: Spawn, momento: MomentoStandIn) -> None:
    writer, reader = spawn(), spawn()
    writer.call("set", key="k", value="v1")
    assert reader.call("get", key="k")["value"] == "v1"
    for round_number in range(2, 5):
        assert reader.call("new_loop")["loops"] == round_number - 1
        assert reader.call("wait_connected", timeout=10.0) == {"connected": True}
        delay, seen = wait_seen(writer, reader, "set", "k", value=f"v{round_number}")
        assert seen["seen"], seen
        assert delay < DELAY_GOAL
    state = reader.call("state")
    assert state["loops"] == 4
    assert momento.subscribers() == 2  # the old loops' subscriptions ended with them


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
