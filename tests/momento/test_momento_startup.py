"""Starting the Momento backend: a missing SDK is named at once, a cold first call is a hit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from polycache import Cache, ConfigurationError
from polycache.backends.momento import MomentoBackend
from tests.stand_ins.momento_fixtures import TEST_CACHE
from tests.stand_ins.momento_server import MomentoStandIn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_python(code: str, *arguments: str) -> str:
    """Run `code` in a fresh interpreter (a cold process) and return what it printed."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("POLYCACHE_", "MOMENTO_"))
    }
    environment["PYTHONPATH"] = ROOT
    completed = subprocess.run(
        [sys.executable, "-c", code, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=environment,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "build",
    [
        lambda: Cache("momento://c?endpoint=127.0.0.1:9"),
        lambda: MomentoBackend.from_url("momento://c?endpoint=127.0.0.1:9"),
        lambda: MomentoBackend("c", endpoint=("127.0.0.1", 9)),
    ],
    ids=["Cache", "from_url", "constructor"],
)
def test_without_the_sdk_construction_names_the_extra(
    build: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "momento", None)  # as if `momento` were not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'polycache\[momento\]'"):
        build()  # type: ignore[operator]


def test_import_polycache_loads_no_sdk_and_construction_opens_no_connection() -> None:
    code = (
        "import sys\n"
        "import polycache\n"
        "from polycache import Cache\n"
        "names = ('momento', 'grpc', 'momento_wire_types')\n"
        "before = sorted(m for m in names if m in sys.modules)\n"
        "Cache('momento://c?endpoint=127.0.0.1:9&local_ttl=1')  # nothing listens there\n"
        "print(before, 'momento' in sys.modules)\n"
    )
    assert run_python(code) == "[] True"


# The SDK's import takes 0.3 s on this machine and up to a second on a 128 MB Lambda (a fraction
# of a vCPU); this finder makes the first import of `momento` take that second here too.
_COLD_FIRST_GET = """
import asyncio, importlib.abc, json, sys, time

class SlowSdkImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "momento":
            sys.meta_path.remove(self)
            time.sleep(0.8)
        return None

sys.meta_path.insert(0, SlowSdkImport())
from polycache import Cache

started = time.perf_counter()
cache = Cache(sys.argv[1])  # module scope, as in a Lambda handler's module: no loop yet
built = time.perf_counter() - started

async def handler():
    started = time.perf_counter()
    value = await cache.get("greeting")
    first = time.perf_counter() - started
    started = time.perf_counter()
    await cache.get("greeting")
    second = time.perf_counter() - started
    await cache.aclose()
    return value, first, second

value, first, second = asyncio.run(handler())
print(json.dumps({"value": value, "backend_errors": cache.stats.backend_errors,
                  "built": built, "first": first, "second": second}))
"""


async def test_a_cold_first_get_on_a_healthy_server_is_a_hit(momento: MomentoStandIn) -> None:
    async with Cache(momento.url(TEST_CACHE)) as writer:
        await writer.set("greeting", "hello")
    result = json.loads(run_python(_COLD_FIRST_GET, momento.url(TEST_CACHE)))
    print(f"cold process: construction {result['built']:.3f} s, first get {result['first']:.3f} s,")
    print(f"second get {result['second']:.4f} s (default backend_timeout 1 s)")
    assert result["value"] == "hello"
    assert result["backend_errors"] == 0
    assert result["first"] < 0.5


async def test_built_in_a_running_loop_it_connects_at_once(momento: MomentoStandIn) -> None:
    code = """
import asyncio, json, sys, time
from polycache import Cache

async def main():
    cache = Cache(sys.argv[1])
    assert not cache.backend.connected
    await asyncio.sleep(0.5)  # the rest of the function's initialisation
    assert cache.backend.connected  # before any operation asked for it
    started = time.perf_counter()
    value = await cache.get("greeting")
    first = time.perf_counter() - started
    await cache.aclose()
    return value, first, cache.stats.backend_errors

value, first, errors = asyncio.run(main())
print(json.dumps({"value": value, "first": first, "backend_errors": errors}))
"""
    async with Cache(momento.url(TEST_CACHE)) as writer:
        await writer.set("greeting", "hello")
    momento.clear_calls()
    result = json.loads(run_python(code, momento.url(TEST_CACHE)))
    assert result["value"] == "hello"
    assert result["backend_errors"] == 0
    assert result["first"] < 0.25  # the channel and the generation were ready before the call
    assert momento.calls()["Get"] == 2  # the generation at construction, then the get


async def test_from_url_reads_only_the_environment_it_is_given(
    momento: MomentoStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from polycache import Entry
    from tests.momento.helpers import fake_api_key

    given = fake_api_key("given")
    monkeypatch.setenv("MOMENTO_API_KEY", "not a key at all")  # would fail if it were read
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "from-os-environ")
    momento.require_api_key(given)
    backend = MomentoBackend.from_url(momento.url(TEST_CACHE), environ={"MOMENTO_API_KEY": given})
    assert "lambda_tuned=False" in repr(backend)
    await backend.set("k", Entry(b"v", 2e9, 2e9, 2e9))
    read = await backend.get("k")
    assert read is not None and read.value == b"v"
    await backend.aclose()
    with pytest.raises(ConfigurationError, match="MOMENTO_API_KEY is set but empty"):
        MomentoBackend.from_url(momento.url(TEST_CACHE), environ={"MOMENTO_API_KEY": " "})


def test_a_new_loop_reconnects_without_reading_the_generation_again(
    momento: MomentoStandIn,
) -> None:
    import asyncio

    cache = Cache(momento.url(TEST_CACHE))  # module scope, as in a Lambda handler's module

    async def invocation() -> object:
        return await cache.get("k")

    for _ in range(5):
        asyncio.run(invocation())  # a new loop, so a new client, each time
    assert momento.calls()["Get"] == 5 + 1  # one read of the generation, for the process
