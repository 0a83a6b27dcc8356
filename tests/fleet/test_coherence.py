"""Near-caches stay coherent across OS processes, on every backend that can push (Momento
Topics, Redis pub/sub): a write in one process reaches the others' near-caches."""

from __future__ import annotations

import pytest

from tests.fleet.processes import DELAY_GOAL, Spawn, wait_seen


@pytest.fixture(
    params=[
        pytest.param("momento", marks=pytest.mark.momento),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def any_spawn(request: pytest.FixtureRequest) -> Spawn:
    """Starts worker processes on each pushing backend in turn (fixtures in conftest.py)."""
    spawn: Spawn = request.getfixturevalue(f"{request.param}_spawn")
    return spawn


def test_a_set_reaches_the_other_processes_near_cache_within_200_ms(any_spawn: Spawn) -> None:
    writer, reader = any_spawn(), any_spawn()
    writer.call("set", key="k", value="v1")
    assert reader.call("get", key="k")["value"] == "v1"  # held in the reader's near-cache
    delay, seen = wait_seen(writer, reader, "set", "k", value="v2")
    assert seen["seen"], seen
    assert 0 <= delay < DELAY_GOAL
    assert ["k"] in reader.call("state")["remote_invalidations"]


def test_a_delete_makes_the_other_process_miss(any_spawn: Spawn) -> None:
    writer, reader = any_spawn(), any_spawn()
    writer.call("set", key="gone", value="here")
    assert reader.call("get", key="gone")["value"] == "here"
    delay, seen = wait_seen(writer, reader, "delete", "gone", missing=True)
    assert seen["seen"], seen
    assert delay < DELAY_GOAL


def test_every_process_hears_one_write(any_spawn: Spawn) -> None:
    writer, *readers = (any_spawn() for _ in range(3))
    writer.call("set", key="shared", value=1)
    for reader in readers:
        assert reader.call("get", key="shared")["value"] == 1
    for reader in readers:
        reader.send("wait_for", key="shared", value=2, timeout=5.0)
    writer.call("set", key="shared", value=2)
    assert all(reader.reply()["seen"] for reader in readers)
    # The writer's own message is skipped: it keeps the copy it wrote.
    assert writer.call("state")["remote_invalidations"] == []


def test_a_clear_reaches_the_other_processes(any_spawn: Spawn) -> None:
    writer, reader = any_spawn(), any_spawn()
    writer.call("set", key="a", value="old")
    assert reader.call("get", key="a")["value"] == "old"
    reader.send("wait_for", key="a", missing=True, timeout=5.0)
    written = writer.call("clear")
    seen = reader.reply()
    assert seen["seen"], seen
    assert float(seen["at"]) - float(written["at"]) < DELAY_GOAL
    # Not a near copy read back from the generation the clear replaced: gone for good.
    assert reader.call("get", key="a")["value"] is None


def test_after_invalidate_tags_every_other_process_misses(any_spawn: Spawn) -> None:
    writer, *readers = (any_spawn() for _ in range(3))
    writer.call("set", key="user:42:profile", value="p", tags=["user:42"])
    writer.call("set", key="user:7:profile", value="q", tags=["user:7"])
    for reader in readers:
        assert reader.call("get", key="user:42:profile")["value"] == "p"
        assert reader.call("get", key="user:7:profile")["value"] == "q"
    for reader in readers:
        reader.send("wait_for", key="user:42:profile", missing=True, timeout=5.0)
    written = writer.call("invalidate_tags", tags=["user:42"])
    for reader in readers:
        seen = reader.reply()
        assert seen["seen"], seen
        assert float(seen["at"]) - float(written["at"]) < DELAY_GOAL
        # Only the entries carrying that tag.
        assert reader.call("get", key="user:7:profile")["value"] == "q"
    assert writer.call("get", key="user:42:profile")["value"] is None
