"""The SnapStart hooks in process: what a restore does to entries, registration, and misuse."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import subprocess
import sys
from collections.abc import Callable

import pytest
from snapshot_restore_py import get_after_restore, get_before_snapshot

from polycache import Cache, ConfigurationError, Entry, snapstart
from polycache.backends.near import NearCacheBackend
from tests.conftest import FakeClock
from tests.core.fakes import BytesBackend, CountingLoader
from tests.stand_ins.moto_server import AWS_TEST_ENVIRONMENT


async def settle(condition: Callable[[], bool]) -> None:
    """Let background refreshes run until `condition` holds (five seconds at most)."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - the refresh is a task of this loop
            await asyncio.sleep(0)


def cache_with_loaders(clock: FakeClock) -> tuple[Cache, CountingLoader, CountingLoader]:
    cache = Cache(ttl=60, clock=clock)
    config, secrets = CountingLoader(), CountingLoader()
    cache.register_loader("config", config)
    cache.register_loader("secret", secrets)
    return cache, config, secrets


# -- what a restore does to the entries -------------------------------------------------------


async def test_entries_from_the_snapshot_are_served_stale_while_they_refresh(
    clock: FakeClock,
) -> None:
    cache, config, _ = cache_with_loaders(clock)
    snapstart.register(cache)
    assert await cache.get("config:a") == "a#1"
    clock.advance(7 * 24 * 3600)  # the snapshot was stored for a week: the entry expired
    snapstart.after_restore()
    assert await cache.get("config:a") == "a#1"  # at once, from the snapshot
    assert cache.stats.stale_hits == 1
    await settle(lambda: len(config.calls) == 2)
    await settle(lambda: cache.stats.loads == 2)
    assert await cache.get("config:a") == "a#2"
    assert cache.stats.hits == 1


async def test_reload_on_restore_keys_load_before_use(clock: FakeClock) -> None:
    cache, _, secrets = cache_with_loaders(clock)
    snapstart.register(cache, reload_on_restore=["secret:*"])
    await cache.get("config:a")
    await cache.get("secret:db")
    snapstart.after_restore()
    assert await cache.get("secret:db") == "db#2"
    assert secrets.calls == ["db", "db"]
    assert await cache.get("config:a") == "a#1"  # not named: served stale


async def test_reload_on_restore_takes_a_function_of_the_key(clock: FakeClock) -> None:
    cache, _, _ = cache_with_loaders(clock)
    snapstart.register(cache, reload_on_restore=lambda key: key.endswith(":b"))
    await cache.get("config:a")
    await cache.get("config:b")
    snapstart.after_restore()
    assert await cache.get("config:b") == "b#3"
    assert await cache.get("config:a") == "a#1"


async def test_a_remembered_not_found_is_asked_again(clock: FakeClock) -> None:
    cache, config, _ = cache_with_loaders(clock)
    config.missing.add("gone")
    snapstart.register(cache)
    assert await cache.get("config:gone") is None
    assert await cache.get("config:gone") is None
    assert config.calls == ["gone"]
    snapstart.after_restore()
    assert await cache.get("config:gone") is None
    assert config.calls == ["gone", "gone"]


async def test_past_stale_for_an_entry_from_the_snapshot_waits_for_its_load(
    clock: FakeClock,
) -> None:
    cache, _, _ = cache_with_loaders(clock)
    snapstart.register(cache, stale_for=5)
    await cache.get("config:a")
    clock.advance(3600)
    snapstart.after_restore()
    clock.advance(6)
    assert await cache.get("config:a") == "a#2"
    assert cache.stats.stale_hits == 0


async def test_an_entry_keeps_a_stale_window_longer_than_stale_for(clock: FakeClock) -> None:
    cache = Cache(ttl=60, stale_ttl=3600, clock=clock)
    snapstart.register(cache, stale_for=5)
    await cache.set("plain", "value")
    snapstart.after_restore()
    clock.advance(600)
    assert await cache.get("plain") == "value"  # stale (no loader to refresh it), not gone
    assert cache.stats.stale_hits == 1


async def test_a_near_cache_forgets_its_local_layer_and_the_shared_backend_is_left_alone(
    clock: FakeClock,
) -> None:
    remote = BytesBackend()
    near = NearCacheBackend(remote, clock=clock)
    cache = Cache(near, ttl=60, clock=clock)
    snapstart.register(cache, reload_on_restore=["*"])
    await cache.set("key", "value")
    assert len(near) == 1
    snapstart.after_restore()
    assert len(near) == 0
    assert isinstance(remote.entries["key"], Entry)
    assert await cache.get("key") == "value"  # from the remote backend
    assert remote.calls[-1] == ("get", "key")


async def test_invalidating_a_tag_after_a_restore_drops_an_entry_from_the_snapshot(
    clock: FakeClock,
) -> None:
    cache = Cache(ttl=60, clock=clock)
    snapstart.register(cache)
    await cache.set("user:42", "Ada", tags=["users"])
    snapstart.after_restore()
    await cache.invalidate_tags("users")
    assert await cache.get("user:42") is None


# -- the hooks as the runtime calls them ------------------------------------------------------


def test_before_snapshot_closes_each_cache_on_the_environment_loop() -> None:
    remote = BytesBackend()
    cache = Cache(remote)
    snapstart.register(cache)
    snapstart.before_snapshot()
    assert remote.calls == [("aclose", "")]


class FailingToClose(BytesBackend):
    async def aclose(self) -> None:
        raise ConnectionResetError("already gone")


def test_a_cache_failing_to_close_does_not_fail_the_snapshot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing, closing = FailingToClose(), BytesBackend()
    caches = [Cache(failing), Cache(closing)]  # held: a registration does not keep one alive
    for cache in caches:
        snapstart.register(cache)
    with caplog.at_level(logging.WARNING, logger="polycache"):
        snapstart.before_snapshot()
    assert "closing" in caplog.text
    assert "ConnectionResetError" in caplog.text
    assert closing.calls == [("aclose", "")]


def test_the_runtime_hooks_are_registered_once_per_process() -> None:
    snapstart.register(Cache())
    snapstart.register(Cache())
    assert [hook for hook, _, _ in get_before_snapshot()].count(snapstart.before_snapshot) == 1
    assert [hook for hook, _, _ in get_after_restore()].count(snapstart.after_restore) == 1


def test_after_restore_draws_new_pseudorandom_numbers() -> None:
    # Every environment restored from one snapshot would otherwise draw the same jitter.
    random.seed(7)
    in_snapshot = random.random()
    random.seed(7)
    snapstart.after_restore()
    assert random.random() != in_snapshot


def test_a_registration_does_not_keep_a_cache_alive() -> None:
    cache = Cache()
    snapstart.register(cache)
    assert len(snapstart._caches) == 1
    del cache
    gc.collect()
    assert len(snapstart._caches) == 0


# -- the automatic opt-in ---------------------------------------------------------------------


async def test_a_cache_built_in_a_snapstart_init_registers_itself(clock: FakeClock) -> None:
    cache, _, secrets = cache_with_loaders(clock)
    cache._snapstart_opt_in(
        {"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start", "POLYCACHE_SNAPSTART_RELOAD": "secret:*"}
    )
    assert cache in snapstart._caches
    await cache.get("secret:db")
    snapstart.after_restore()
    assert await cache.get("secret:db") == "db#2"
    assert secrets.calls == ["db", "db"]


def test_an_on_demand_init_registers_nothing() -> None:
    cache = Cache()
    cache._snapstart_opt_in({"AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand"})
    cache._snapstart_opt_in({})
    assert cache not in snapstart._caches


def test_polycache_snapstart_0_turns_the_automatic_registration_off() -> None:
    cache = Cache()
    environ = {"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start", "POLYCACHE_SNAPSTART": "0"}
    assert snapstart.register_from_environment(cache, environ) is False
    assert cache not in snapstart._caches


def test_cache_init_opts_in_by_itself() -> None:
    cache = Cache(environ={"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"})
    assert cache in snapstart._caches


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"POLYCACHE_SNAPSTART": "yes"}, "POLYCACHE_SNAPSTART must be 1 .* or 0, got 'yes'"),
        ({"POLYCACHE_SNAPSTART_RELOAD": "secret:*,,ssm:*"}, "none empty; got 'secret:\\*,,ssm"),
    ],
)
def test_bad_snapstart_variables_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        snapstart.register_from_environment(Cache(), environ)


# -- misuse and a missing extra ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"reload_on_restore": "secretsmanager:*"}, "a list of key patterns .* got str"),
        ({"reload_on_restore": ["ssm:*", ""]}, "patterns must be non-empty str, got ''"),
        ({"reload_on_restore": [3]}, "patterns must be non-empty str, got 3"),
        ({"stale_for": -1}, "stale_for must be"),
        ({"stale_for": "60"}, "stale_for must be a number of seconds"),
    ],
)
def test_bad_arguments_are_named(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        snapstart.register(Cache(), **arguments)  # type: ignore[arg-type]


def test_only_a_cache_can_be_registered() -> None:
    with pytest.raises(ConfigurationError, match=r"takes a polycache\.Cache, got dict"):
        snapstart.register({})  # type: ignore[arg-type]


def test_without_snapshot_restore_py_register_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'polycache\[snapstart\]'"):
        snapstart.register(Cache())


def test_without_snapshot_restore_py_the_automatic_opt_in_only_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)
    cache = Cache()
    with caplog.at_level(logging.WARNING, logger="polycache"):
        assert snapstart.register_from_environment(cache, {}) is False
    assert "polycache[snapstart]" in caplog.text
    assert cache not in snapstart._caches


def test_import_polycache_imports_neither_snapstart_nor_its_library() -> None:
    code = (
        "import sys, polycache\n"
        "print(sorted(m for m in ('polycache.snapstart', 'snapshot_restore_py') "
        "if m in sys.modules))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    assert output.strip() == "[]"


class HangingAfterFirstLoad:
    """Loads `name#1`, then hangs until told to answer again (as a call cut by a snapshot)."""

    def __init__(self) -> None:
        self.calls = 0
        self.hang = False

    async def __call__(self, name: str) -> str:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        return f"{name}#{self.calls}"


def test_a_refresh_cut_by_the_snapshot_is_started_again_after_the_restore(
    clock: FakeClock,
) -> None:
    from polycache._lambda import run_on_environment_loop

    cache = Cache(ttl=60, stale_ttl=600, clock=clock)
    loader = HangingAfterFirstLoad()
    cache.register_loader("config", loader)
    snapstart.register(cache)

    async def get() -> object:
        return await cache.get("config:a")

    async def refreshed() -> object:
        await settle(lambda: loader.calls == 3 and cache.stats.loads == 3)
        return await cache.get("config:a")

    assert run_on_environment_loop(get) == "a#1"
    clock.advance(61)
    loader.hang = True
    assert run_on_environment_loop(get) == "a#1"  # stale; its refresh hangs
    run_on_environment_loop(settle, lambda: loader.calls == 2)
    snapstart.before_snapshot()  # cancels the refresh
    snapstart.after_restore()
    loader.hang = False
    assert run_on_environment_loop(get) == "a#1"  # stale, and a new refresh starts
    assert run_on_environment_loop(refreshed) == "a#3"


# -- the AWS loaders' session -----------------------------------------------------------------


async def test_the_default_aws_session_is_renewed_and_keeps_its_service_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from polycache.loaders import _aws

    for name, value in AWS_TEST_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    _aws.use_session(None)
    try:
        before = await _aws.client("ssm")
        session = _aws._session
        snapstart.register(Cache())
        snapstart.after_restore()
        after = await _aws.client("ssm")
        assert after is not before
        assert _aws._session is not session
        assert _aws._session.get_component("data_loader") is session.get_component("data_loader")
    finally:
        _aws.use_session(None)


def test_an_aws_session_given_to_use_session_is_kept_across_a_restore() -> None:
    import botocore.session

    from polycache.loaders import _aws

    given = botocore.session.Session()
    _aws.use_session(given)
    try:
        snapstart.after_restore()
        assert _aws._session is given
    finally:
        _aws.use_session(None)
