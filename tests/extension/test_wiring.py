"""How the extension is wired: its extra, its loaders per request, its error translation, and
the cost of a new event loop for the `extension://` backend."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import pytest

from polycache import Cache, SourceNotFound
from polycache.backends.extension import ExtensionBackend
from polycache.extension._settings import ExtensionSettings
from polycache.extension._sources import (
    AwsSources,
    ReadThrough,
    SampleConfig,
    SourceRejected,
    SourceTimeout,
    refusal,
)
from tests.extension.fakes import FakeSources
from tests.stand_ins.extension_process import ExtensionProcess

WITHOUT_AIOHTTP = "import sys; sys.modules['aiohttp'] = None; "


@pytest.mark.parametrize(
    "program",
    [
        "from polycache.extension import main; raise SystemExit(main())",
        "import runpy; runpy.run_module('polycache.extension', run_name='__main__')",
    ],
    ids=["polycache-extension", "python -m polycache.extension"],
)
def test_the_command_without_its_extra_says_what_to_install(program: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_AIOHTTP + program],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'polycache[extension]'" in lines[0]
    assert "Traceback" not in result.stderr


def test_the_backend_needs_no_extra(extension_process: ExtensionProcess) -> None:
    # The client is the standard library's: a Cache on the extension works with neither httpx
    # nor aiohttp importable.
    program = (
        "import sys, asyncio; sys.modules['httpx'] = None; sys.modules['aiohttp'] = None\n"
        "from polycache import Cache\n"
        "async def main():\n"
        f"    async with Cache('extension://127.0.0.1:{extension_process.port}') as cache:\n"
        "        await cache.set('no-extra', {'ok': True})\n"
        "        print(await cache.get('no-extra'))\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "AWS_SESSION_TOKEN": extension_process.token or ""},
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "{'ok': True}\n", "")


async def test_each_request_loads_through_its_own_loader() -> None:
    odd = 'prod/"db":[1, null]'
    sources = FakeSources()
    sources.secrets[odd] = "s3cret"
    sources.parameters[odd] = "value"
    reads = ReadThrough(ExtensionSettings(), sources, SampleConfig())
    try:
        for _ in range(2):
            await reads.secret(odd, version_id=None, version_stage="AWSCURRENT")
            await reads.secret(odd, version_id=None, version_stage="AWSPREVIOUS")
            await reads.parameter(odd, decrypt=True)
            await reads.parameter(odd, decrypt=False)
            assert await reads.parameter_value(odd) == "value"
        # Each set of arguments is loaded once, with exactly those arguments.
        assert sources.calls == [("secret", odd)] * 2 + [("parameter", odd)] * 3
        assert reads.cache.stats.loads == 5
    finally:
        await reads.aclose()


class _ClientError(Exception):
    """What botocore raises, as far as the translation looks at it."""

    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code}) with the value hunter2")
        self.response = {"Error": {"Code": code}}
        self.operation_name = "GetParameter"


class _FailingSsm:
    def __init__(self, code: str) -> None:
        self.code = code

    async def get_parameter(self, **parameters: Any) -> Any:
        raise _ClientError(self.code)


@pytest.mark.parametrize(
    ("code", "error", "kind"),
    [
        ("ParameterNotFound", SourceNotFound, SourceNotFound),
        ("ValidationException", Exception, SourceRejected),
        ("ReadTimeoutError", Exception, SourceTimeout),
        ("AccessDeniedException", Exception, Exception),
    ],
)
async def test_aws_errors_are_translated_as_the_loaders_translate_them(
    code: str, error: type[Exception], kind: type[Exception]
) -> None:
    async def clients(service: str) -> Any:
        return _FailingSsm(code)

    sources = AwsSources(timeout=1.0, clients=clients)
    with pytest.raises(error) as raised:
        await sources.get_parameter("/p", decrypt=True)
    # The loaders' wording (the name, never a key: the Cache that knows it attaches it), and
    # AWS's text (which may quote a value) nowhere.
    assert f"{code} during GetParameter" in str(raised.value)
    assert "parameter /p" in str(raised.value)
    assert getattr(raised.value, "key", None) is None
    assert "hunter2" not in str(raised.value)
    assert isinstance(raised.value.__cause__, _ClientError)
    if kind is not SourceNotFound:
        found = refusal(raised.value)  # type: ignore[arg-type]
        assert found is kind or (kind is Exception and found not in (SourceRejected, SourceTimeout))


_BACKEND: ExtensionBackend | None = None


async def _handler() -> Any:
    assert _BACKEND is not None
    return await _BACKEND.get("per-invocation")


def test_asyncio_run_per_invocation_rebuilds_the_client_cheaply(
    extension_process: ExtensionProcess,
) -> None:
    global _BACKEND
    extension_process.clear()
    _BACKEND = ExtensionBackend(port=extension_process.port, token=extension_process.token)

    async def store() -> None:
        async with Cache(_BACKEND) as cache:
            await cache.set("per-invocation", "value")

    asyncio.run(store())
    durations = []
    for _ in range(30):
        started = time.perf_counter()
        entry = asyncio.run(_handler())
        durations.append(time.perf_counter() - started)
        assert entry is not None
    # ~20 ms each when every new loop's client built a verifying TLS context; ~1 ms now.
    assert statistics.median(durations) < 0.010, durations
