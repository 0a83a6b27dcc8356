"""AppConfig over real sockets: the AppConfigData API stand-in (botocore) and the agent's API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from polycache import Cache, ConfigurationError, LoaderError, SourceNotFound
from polycache.loaders import _aws
from polycache.loaders.appconfig import AGENT_PORT, AppConfigLoader
from tests.conftest import FakeClock
from tests.stand_ins.appconfig_servers import AppConfigAgentServer, AppConfigDataServer
from tests.stand_ins.moto_server import AWS_TEST_ENVIRONMENT

SETTINGS = json.dumps({"level": 3, "name": "shop"}).encode()
FLAGS = json.dumps({"checkout": {"enabled": True, "limit": 5}, "beta": {"enabled": False}}).encode()
NO_AGENT: dict[str, str] = {}


@pytest.fixture
def data_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[AppConfigDataServer]:
    server = AppConfigDataServer(poll_interval=30).start()
    for name, value in {**AWS_TEST_ENVIRONMENT, **server.environment()}.items():
        monkeypatch.setenv(name, value)
    server.deploy("shop", "prod", "settings", SETTINGS)
    server.deploy("shop", "prod", "flags", FLAGS)
    server.deploy("shop", "prod", "motd", b"hello", "text/plain; charset=utf-8")
    server.deploy("shop", "prod", "blob", b"\x00\xff", "application/octet-stream")
    yield server
    server.stop()


@pytest.fixture
def agent() -> Iterator[AppConfigAgentServer]:
    server = AppConfigAgentServer().start()
    server.deploy("shop", "prod", "settings", SETTINGS)
    server.deploy("shop", "prod", "flags", FLAGS)
    yield server
    server.stop()


async def test_the_api_loads_and_keeps_the_session(
    data_api: AppConfigDataServer, clock: FakeClock
) -> None:
    loader = AppConfigLoader(environ=NO_AGENT, clock=clock)

    assert await loader("shop/prod/settings") == {"level": 3, "name": "shop"}
    assert data_api.calls == {"StartConfigurationSession": 1, "GetLatestConfiguration": 1}
    # Within the minimum poll interval AppConfig asked for: no call, the configuration it has.
    clock.advance(29)
    assert await loader("shop/prod/settings") == {"level": 3, "name": "shop"}
    assert data_api.calls["GetLatestConfiguration"] == 1
    # Past it: one poll with the next token; unchanged, so an empty body and the same value.
    clock.advance(2)
    assert await loader("shop/prod/settings") == {"level": 3, "name": "shop"}
    assert data_api.calls == {"StartConfigurationSession": 1, "GetLatestConfiguration": 2}
    # A new deployment arrives on the next poll.
    data_api.deploy("shop", "prod", "settings", b'{"level": 4}')
    clock.advance(31)
    assert await loader("shop/prod/settings") == {"level": 4}
    assert data_api.calls == {"StartConfigurationSession": 1, "GetLatestConfiguration": 3}


async def test_the_requested_poll_interval_is_sent(
    data_api: AppConfigDataServer, clock: FakeClock
) -> None:
    loader = AppConfigLoader(environ=NO_AGENT, poll_interval=120, clock=clock)
    await loader("shop/prod/settings")
    clock.advance(119)
    await loader("shop/prod/settings")
    assert data_api.calls["GetLatestConfiguration"] == 1
    clock.advance(2)
    await loader("shop/prod/settings")
    assert data_api.calls["GetLatestConfiguration"] == 2


async def test_an_expired_token_starts_a_new_session(
    data_api: AppConfigDataServer, clock: FakeClock
) -> None:
    loader = AppConfigLoader(environ=NO_AGENT, clock=clock)
    await loader("shop/prod/settings")
    data_api.expire_tokens()
    clock.advance(31)

    assert await loader("shop/prod/settings") == {"level": 3, "name": "shop"}
    assert data_api.calls == {"StartConfigurationSession": 2, "GetLatestConfiguration": 3}


async def test_concurrent_loads_of_one_profile_spend_each_token_once(
    data_api: AppConfigDataServer, clock: FakeClock
) -> None:
    loader = AppConfigLoader(environ=NO_AGENT, clock=clock)
    names = ["shop/prod/flags", "shop/prod/flags#checkout", "shop/prod/flags#beta"]

    values = await asyncio.gather(*(loader(name) for name in names))

    assert values[1:] == [{"enabled": True, "limit": 5}, {"enabled": False}]
    assert data_api.calls == {"StartConfigurationSession": 1, "GetLatestConfiguration": 1}


def test_every_event_loop_can_use_the_loader(data_api: AppConfigDataServer) -> None:
    loader = AppConfigLoader(environ=NO_AGENT, clock=FakeClock())

    async def invocation() -> Any:
        return await loader("shop/prod/settings")

    assert asyncio.run(invocation()) == asyncio.run(invocation()) == {"level": 3, "name": "shop"}
    asyncio.run(_aws.close_clients())


async def test_transforms(data_api: AppConfigDataServer) -> None:
    auto = AppConfigLoader(environ=NO_AGENT)
    assert await auto("shop/prod/motd") == "hello"
    assert await auto("shop/prod/blob") == b"\x00\xff"
    assert await AppConfigLoader(environ=NO_AGENT, transform=None)("shop/prod/settings") == SETTINGS
    flags = AppConfigLoader(environ=NO_AGENT, transform="feature_flags")
    assert (await flags("shop/prod/flags"))["beta"] == {"enabled": False}
    with pytest.raises(SourceNotFound, match=r"flags#gone' not found \(no flag 'gone'\)"):
        await flags("shop/prod/flags#gone")
    with pytest.raises(LoaderError, match="feature flag 'level' must be an object"):
        await flags("shop/prod/settings")
    with pytest.raises(LoaderError, match=r"not valid JSON \(JSONDecodeError: Expecting value"):
        await AppConfigLoader(environ=NO_AGENT, transform="json")("shop/prod/motd")
    with pytest.raises(LoaderError, match="a #flag needs a JSON configuration"):
        await auto("shop/prod/motd#x")


async def test_a_missing_configuration_is_not_found(data_api: AppConfigDataServer) -> None:
    with pytest.raises(SourceNotFound) as raised:
        await AppConfigLoader(environ=NO_AGENT)("shop/prod/nothing")
    assert str(raised.value) == (
        "AppConfig configuration 'shop/prod/nothing' not found "
        "(ResourceNotFoundException during StartConfigurationSession)"
    )
    assert raised.value.key is None  # the Cache attaches the key


async def test_the_agent_is_used_when_present(
    agent: AppConfigAgentServer, data_api: AppConfigDataServer
) -> None:
    loader = AppConfigLoader(environ=agent.environment())

    assert await loader("shop/prod/settings") == {"level": 3, "name": "shop"}
    assert await loader("shop/prod/flags#checkout") == {"enabled": True, "limit": 5}
    assert agent.calls["GET configuration"] == 2
    assert not data_api.calls  # the agent polls AppConfig, not us
    with pytest.raises(SourceNotFound, match="the AppConfig agent answered 404"):
        await loader("shop/prod/nothing")
    assert "agent at 127.0.0.1" in repr(loader)


async def test_an_agent_that_is_not_there_is_a_loader_error(
    agent: AppConfigAgentServer,
) -> None:
    port = agent.port
    agent.stop()
    loader = AppConfigLoader(agent=True, environ={"AWS_APPCONFIG_EXTENSION_HTTP_PORT": str(port)})
    with pytest.raises(LoaderError, match=f"agent at 127.0.0.1:{port} did not answer"):
        await loader("shop/prod/settings")


def test_which_way_is_chosen() -> None:
    def via(environ: dict[str, str], **arguments: Any) -> str:
        return repr(AppConfigLoader(environ=environ, **arguments)).split("via=")[1]

    assert via({}) == "'API')"
    assert via({"POLYCACHE_APPCONFIG_AGENT": "1"}) == f"'agent at 127.0.0.1:{AGENT_PORT}')"
    assert via({"AWS_APPCONFIG_EXTENSION_PREFETCH_LIST": "x"}) == "'agent at 127.0.0.1:2772')"
    assert via({"AWS_APPCONFIG_EXTENSION_HTTP_PORT": "2800"}) == "'agent at 127.0.0.1:2800')"
    off = {"POLYCACHE_APPCONFIG_AGENT": "0", "AWS_APPCONFIG_EXTENSION_HTTP_PORT": "2800"}
    assert via(off) == "'API')"
    assert via({}, agent=True) == "'agent at 127.0.0.1:2772')"
    assert via({"AWS_APPCONFIG_EXTENSION_HTTP_PORT": "2800"}, agent=False) == "'API')"


def test_bad_arguments_and_names_are_named() -> None:
    with pytest.raises(ConfigurationError, match="POLYCACHE_APPCONFIG_AGENT must be 1 or 0"):
        AppConfigLoader(environ={"POLYCACHE_APPCONFIG_AGENT": "maybe"})
    with pytest.raises(ConfigurationError, match="AWS_APPCONFIG_EXTENSION_HTTP_PORT"):
        AppConfigLoader(environ={"AWS_APPCONFIG_EXTENSION_HTTP_PORT": "http"})
    with pytest.raises(ConfigurationError, match="transform must be one of"):
        AppConfigLoader(transform="yaml")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="poll_interval"):
        AppConfigLoader(poll_interval=5)
    for name in ["shop/prod", "shop//settings", "a/b/c/d", "a/b/c#"]:
        with pytest.raises(ConfigurationError, match="application/environment/profile"):
            asyncio.run(AppConfigLoader(environ=NO_AGENT)(name))


async def test_through_the_cache(data_api: AppConfigDataServer, clock: FakeClock) -> None:
    cache = Cache(ttl=45, clock=clock)

    assert await cache.get("appconfig:shop/prod/settings") == {"level": 3, "name": "shop"}
    assert await cache.get("appconfig:shop/prod/flags#checkout") == {"enabled": True, "limit": 5}
    assert await cache.get("appconfig:shop/prod/nothing", "default") == "default"
    assert data_api.calls["GetLatestConfiguration"] == 2
