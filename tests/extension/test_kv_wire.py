"""The key/value API as other runtimes see it: raw bytes, the type in Content-Type.

A Node or Java function in the same execution environment (here: curl and urllib) writes and
reads the same entries as Python's `extension://` backend.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time

import pytest

from polycache import Cache, ConfigurationError
from polycache._extension_wire import MAX_KEY_BYTES, encode_key
from polycache.backends.extension import ExtensionBackend
from tests.stand_ins.extension_process import ExtensionProcess

TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"


def _curl(process: ExtensionProcess, *arguments: str) -> subprocess.CompletedProcess[bytes]:
    curl = shutil.which("curl")
    assert curl is not None, "curl is part of the test environment"
    return subprocess.run(
        [curl, "--silent", "--show-error", "--noproxy", "*", "--max-time", "5", *arguments],
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )


async def _put_with_curl(
    process: ExtensionProcess, key: str, body: bytes, content_type: str | None
) -> None:
    arguments = ["--request", "PUT", "--data-binary", "@-", "--write-out", "%{http_code}"]
    arguments += ["--header", f"{TOKEN_HEADER}: {process.token}"]
    if content_type is not None:
        arguments += ["--header", f"Content-Type: {content_type}"]
    curl = shutil.which("curl")
    assert curl is not None
    result = await asyncio.to_thread(
        subprocess.run,
        [curl, "--silent", "--noproxy", "*", *arguments, f"{process.url}/v1/kv/{key}"],
        input=body,
        capture_output=True,
        check=True,
    )
    assert result.stdout == b"204"


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", b'{"a": [1, 2], "b": "\xc3\xa9"}', {"a": [1, 2], "b": "é"}),
        ("application/json; charset=utf-8", b"42", 42),
        ("text/plain; charset=utf-8", "héllo".encode(), "héllo"),
        ("application/octet-stream", b"\x00\x01binary\xff", b"\x00\x01binary\xff"),
        ("image/png", b"\x89PNG", b"\x89PNG"),
        # curl's own default for --data-binary
        (None, b"a=1&b=2", b"a=1&b=2"),
    ],
)
async def test_a_value_put_with_curl_reads_back_in_python(
    extension_backend: ExtensionBackend,
    extension_process: ExtensionProcess,
    content_type: str | None,
    body: bytes,
    expected: object,
) -> None:
    await _put_with_curl(extension_process, "from-curl", body, content_type)
    entry = await extension_backend.get("from-curl")
    assert entry is not None
    assert entry.fresh_until == float("inf")  # no freshness given: kept until evicted
    async with Cache(extension_backend) as cache:
        assert await cache.get("from-curl") == expected


@pytest.mark.parametrize(
    ("value", "body", "content_type"),
    [
        ("hello", b"hello", "text/plain; charset=utf-8"),
        ({"a": 1, "b": [True, None]}, b'{"a":1,"b":[true,null]}', "application/json"),
        (b"\x00raw\xff", b"\x00raw\xff", "application/octet-stream"),
        ([], b"[]", "application/json"),
    ],
)
async def test_a_python_set_reads_back_with_curl_as_the_plain_value(
    extension_backend: ExtensionBackend,
    extension_process: ExtensionProcess,
    value: object,
    body: bytes,
    content_type: str,
) -> None:
    async with Cache(extension_backend, ttl=60, stale_ttl=30) as cache:
        await cache.set("from-python", value)
    before = time.time()
    result = await asyncio.to_thread(
        _curl,
        extension_process,
        "--include",
        "--header",
        f"{TOKEN_HEADER}: {extension_process.token}",
        f"{extension_process.url}/v1/kv/from-python",
    )
    head, _, answered = result.stdout.partition(b"\r\n\r\n")
    assert answered == body
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in head.decode().split("\r\n")[1:])
    }
    assert headers["content-type"] == content_type
    assert before + 50 < float(headers["x-polycache-fresh-until"]) <= time.time() + 60
    assert float(headers["x-polycache-stale-until"]) == pytest.approx(
        float(headers["x-polycache-fresh-until"]) + 30
    )


async def test_curl_reads_a_plainly_named_key_and_an_encoded_one(
    extension_backend: ExtensionBackend, extension_process: ExtensionProcess
) -> None:
    async with Cache(extension_backend) as cache:
        await cache.set("plain", "one")
        await cache.set("a/b c", "two")
    token = ["--header", f"{TOKEN_HEADER}: {extension_process.token}"]
    plain = await asyncio.to_thread(
        _curl, extension_process, *token, f"{extension_process.url}/v1/kv/plain"
    )
    encoded = await asyncio.to_thread(
        _curl, extension_process, *token, f"{extension_process.url}/v1/kv/a%2Fb%20c"
    )
    assert (plain.stdout, encoded.stdout) == (b"one", b"two")


def test_keys_are_encoded_byte_by_byte() -> None:
    assert encode_key("..") == "%2E%2E"
    assert encode_key("é/") == "%C3%A9%2F"


async def test_a_key_over_the_limit_is_named_at_the_call(
    extension_backend: ExtensionBackend,
) -> None:
    longest = "k" * MAX_KEY_BYTES
    async with Cache(extension_backend) as cache:
        await cache.set(longest, "fits")
        assert await cache.get(longest) == "fits"
        with pytest.raises(ConfigurationError, match=f"at most {MAX_KEY_BYTES}"):
            await cache.set(longest + "k", "too long")
        with pytest.raises(ConfigurationError, match="at most"):
            await cache.get("é" * (MAX_KEY_BYTES // 2 + 1))
