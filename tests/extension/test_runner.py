"""The extension's main loop in process, with an injected Extensions API and fake sources."""

from __future__ import annotations

import asyncio

import pytest

from polycache.extension._lifecycle import Event, ExtensionsApiError
from polycache.extension._runner import _program_name, run
from tests.extension.fakes import FakeSources
from tests.stand_ins.extension_process import free_port


class ScriptedApi:
    """An `ExtensionsApi` that hands out a fixed list of events."""

    def __init__(self, events: list[Event], *, fail_register: bool = False) -> None:
        self.events = events
        self.fail_register = fail_register
        self.calls: list[tuple[str, ...]] = []
        self.closed = False
        self.waiting = asyncio.Event()

    async def register(self, name: str, events: tuple[str, ...]) -> str:
        self.calls.append(("register", name, *events))
        if self.fail_register:
            raise ExtensionsApiError("register answered 500 without an identifier")
        return "identifier"

    async def next_event(self) -> Event:
        self.calls.append(("next",))
        self.waiting.set()
        if not self.events:
            await asyncio.Event().wait()
        return self.events.pop(0)

    async def init_error(self, error_type: str, message: str) -> None:
        self.calls.append(("init_error", error_type))

    async def aclose(self) -> None:
        self.closed = True


def _environment(**extra: str) -> dict[str, str]:
    return {
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "POLYCACHE_EXTENSION_PORT": str(free_port()),
        "POLYCACHE_EXTENSION_CONFIG": "/nonexistent/config.yaml",
        **extra,
    }


async def test_invokes_then_shutdown() -> None:
    api = ScriptedApi([Event("INVOKE"), Event("INVOKE"), Event("SHUTDOWN")])
    sources = FakeSources()
    status = await run(_environment(), api_factory=lambda url: api, sources=sources)
    assert status == 0
    assert api.calls[0] == ("register", "polycache-extension", "INVOKE", "SHUTDOWN")
    assert api.calls.count(("next",)) == 3
    assert api.closed
    assert sources.closed


async def test_stop_ends_the_event_loop() -> None:
    api = ScriptedApi([])
    stop = asyncio.Event()
    running = asyncio.ensure_future(
        run(_environment(), api_factory=lambda url: api, sources=FakeSources(), stop=stop)
    )
    await asyncio.wait_for(api.waiting.wait(), 5)
    stop.set()
    assert await asyncio.wait_for(running, 2.0) == 0


async def test_standalone_runs_until_stopped() -> None:
    stop = asyncio.Event()
    environment = _environment()
    del environment["AWS_LAMBDA_RUNTIME_API"]
    running = asyncio.ensure_future(run(environment, sources=FakeSources(), stop=stop))
    await asyncio.sleep(0.1)
    assert not running.done()
    stop.set()
    assert await asyncio.wait_for(running, 2.0) == 0


async def test_a_bad_setting_registers_and_reports() -> None:
    api = ScriptedApi([])
    status = await run(
        _environment(POLYCACHE_EXTENSION_MAX_ITEM_BYTES="lots"),
        api_factory=lambda url: api,
        sources=FakeSources(),
    )
    assert status == 1
    assert [call[0] for call in api.calls] == ["register", "init_error"]
    assert api.calls[1] == ("init_error", "Extension.ConfigurationError")


async def test_a_failed_registration_exits_with_1() -> None:
    api = ScriptedApi([], fail_register=True)
    assert await run(_environment(), api_factory=lambda url: api, sources=FakeSources()) == 1
    assert api.closed


@pytest.mark.parametrize(
    ("argv0", "name"),
    [
        ("/opt/extensions/polycache-extension", "polycache-extension"),
        ("/opt/extensions/my-cache", "my-cache"),
        (
            "/venv/lib/python3.11/site-packages/polycache/extension/__main__.py",
            "polycache-extension",
        ),
    ],
)
def test_the_registration_name_is_the_file_name(argv0: str, name: str) -> None:
    assert _program_name(argv0) == name
