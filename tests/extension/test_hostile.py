"""The extension under hostile clients, as a real process: no token in any answer or log line,
slow clients cannot lock callers out, uploads cannot take its memory past its bound."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest

from tests.stand_ins.extension_process import HOST, ExtensionProcess

pytestmark = pytest.mark.extension

TOKEN_HEAD = b"IQoJb3JpZ2luX2VjEHostileTest"
TOKEN_TAIL = b"SessionTokenPartTwo0123456789"
TOKEN = (TOKEN_HEAD + TOKEN_TAIL).decode()
HEADER = b"X-Aws-Parameters-Secrets-Token"


@contextlib.contextmanager
def _extension(*, file_limit: int | None = None, **environment: str) -> Iterator[ExtensionProcess]:
    process = ExtensionProcess(
        {
            "AWS_SESSION_TOKEN": TOKEN,
            "POLYCACHE_EXTENSION_CONFIG": "/nonexistent/config.yaml",
            **environment,
        },
        file_limit=file_limit,
    )
    with process:
        yield process


async def _exchange(port: int, request: bytes, *, limit: float = 5.0) -> bytes:
    """Send raw bytes, return everything answered until the extension closes (or `limit`)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        await writer.drain()
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(limit):
                while chunk := await reader.read(65536):
                    answer += chunk
        return answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _health(token: bytes = TOKEN_HEAD + TOKEN_TAIL) -> bytes:
    return (
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + HEADER
        + b": "
        + token
        + b"\r\n\r\n"
    )


MALFORMED = {
    "control character in the token": _health(TOKEN_HEAD + b"\x01" + TOKEN_TAIL),
    "NUL in the token": _health(TOKEN_HEAD + b"\x00" + TOKEN_TAIL),
    "header line without a colon": b"GET /health HTTP/1.1\r\nHost: x\r\n"
    + HEADER
    + b" "
    + TOKEN_HEAD
    + TOKEN_TAIL
    + b"\r\n\r\n",
    "bad character in the header name": b"GET /health HTTP/1.1\r\nHost: x\r\n"
    + HEADER
    + b"\x7f: "
    + TOKEN_HEAD
    + TOKEN_TAIL
    + b"\r\n\r\n",
    "folded header line": b"GET /health HTTP/1.1\r\nHost: x\r\n"
    + HEADER
    + b": a\r\n "
    + TOKEN_HEAD
    + TOKEN_TAIL
    + b"\r\n\r\n",
    "header line too long": _health(TOKEN_HEAD + TOKEN_TAIL + b"x" * 9000),
    "token as Content-Length": b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: "
    + TOKEN_HEAD
    + TOKEN_TAIL
    + b"\r\n\r\n",
    "token as Transfer-Encoding": b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
    + TOKEN_HEAD
    + TOKEN_TAIL
    + b"\r\n\r\n",
    "token in a broken request line": b"GET /health?"
    + TOKEN_HEAD
    + b"\x01"
    + TOKEN_TAIL
    + b" HTTP/1.1\r\n\r\n",
    "token as the method": TOKEN_HEAD + TOKEN_TAIL + b"\x01 / HTTP/1.1\r\n\r\n",
}


async def test_no_malformed_request_puts_a_header_value_in_an_answer_or_a_log_line() -> None:
    with _extension(POLYCACHE_EXTENSION_LOG_LEVEL="debug") as process:
        for name, request in MALFORMED.items():
            answer = await _exchange(process.port, request)
            status_line = answer.split(b"\r\n", 1)[0]
            assert status_line.split(b" ")[1:2] in ([b"400"], [b"431"], [b"501"]), (
                name,
                status_line,
            )
            assert TOKEN_HEAD not in answer and TOKEN_TAIL not in answer, name
            assert b"malformed request" in answer, name
        # Still serving, and the token still works.
        assert b"HTTP/1.1 200" in await _exchange(process.port, _health())
        process.stop()
        log = process.log()
    assert log.count("\n") < 50, log
    assert TOKEN_HEAD.decode() not in log and TOKEN_TAIL.decode() not in log, log


async def _slow_client(port: int, stop: asyncio.Event, opened: list[int]) -> None:
    """Open a connection and trickle a request head that never ends; reopen when dropped."""
    while not stop.is_set():
        try:
            async with asyncio.timeout(3):
                reader, writer = await asyncio.open_connection(HOST, port)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.2)
            continue
        opened[0] += 1
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            while not stop.is_set() and not reader.at_eof():
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await reader.read(1024)
        except OSError:
            pass
        finally:
            writer.close()


async def _legitimate(port: int) -> float | None:
    """Seconds one legitimate request took, or None if it failed."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(5):
            answer = await _exchange(port, _health(), limit=5)
    except (OSError, TimeoutError):
        return None
    return time.monotonic() - started if answer.startswith(b"HTTP/1.1 200") else None


async def test_slow_clients_under_a_low_fd_limit_lock_no_caller_out() -> None:
    with _extension(file_limit=256) as process:
        stop = asyncio.Event()
        opened = [0]
        attackers = [
            asyncio.create_task(_slow_client(process.port, stop, opened)) for _ in range(300)
        ]
        try:
            await asyncio.sleep(2)  # every slot taken, the rest in the backlog
            results: list[float | None] = []
            started = time.monotonic()
            while time.monotonic() - started < 6:
                results.append(await _legitimate(process.port))
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.gather(*attackers, return_exceptions=True)
        assert process.returncode is None
        times = sorted(seconds for seconds in results if seconds is not None)
        served = len(times)
        spread = (
            f"median {times[served // 2] * 1000:.0f} ms, slowest {times[-1] * 1000:.0f} ms"
            if times
            else "none"
        )
        print(
            f"\nslowloris: {served}/{len(results)} legitimate requests served ({spread}), "
            f"{opened[0]} slow connections opened"
        )
        process.stop()
        log = process.log()
    assert opened[0] >= 300
    assert served >= 0.9 * len(results) and served >= 5, (served, len(results))
    assert log.count("\n") < 100, log[-3000:]


async def _stalled_upload(port: int, size: int, held: list[asyncio.StreamWriter]) -> None:
    _, writer = await asyncio.open_connection(HOST, port)
    held.append(writer)
    writer.write(
        b"PUT /v1/kv/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + HEADER
        + b": "
        + TOKEN_HEAD
        + TOKEN_TAIL
        + b"\r\nContent-Length: "
        + str(size).encode()
        + b"\r\n\r\n"
    )
    # All but the last byte: the extension waits for it.
    chunk = b"u" * 65536
    sent = 0
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(10):
            while sent < size - 1:
                part = chunk[: size - 1 - sent]
                writer.write(part)
                await writer.drain()
                sent += len(part)


MIB = 1024 * 1024
STORE_BYTES = 8 * MIB
# The documented bound (docs/extension.md): resident memory stays within the idle process,
# the store, the in-flight body budget (4 values by default) and a fixed 16 MiB for buffers.
INFLIGHT_BYTES = 4 * MIB
FIXED_OVERHEAD = 16 * MIB


async def test_stalled_uploads_cannot_take_memory_past_the_bound() -> None:
    with _extension(
        POLYCACHE_EXTENSION_MAX_BYTES=str(STORE_BYTES), POLYCACHE_EXTENSION_BODY_TIMEOUT="3"
    ) as process:
        for _ in range(20):
            assert b"HTTP/1.1 200" in await _exchange(process.port, _health())
        idle = process.memory()["VmRSS"]
        held: list[asyncio.StreamWriter] = []
        await asyncio.gather(*(_stalled_upload(process.port, MIB, held) for _ in range(100)))
        await asyncio.sleep(1)
        peak = process.memory()["VmHWM"]
        for writer in held:
            writer.close()
        # The budget is given back: a whole value is taken again.
        body = b"v" * MIB
        status, _ = await asyncio.to_thread(
            process.request, "PUT", "/v1/kv/after", body=body, headers={"Content-Type": "x/y"}
        )
        assert status == 204
        status, answered = await asyncio.to_thread(process.request, "GET", "/v1/kv/after")
        assert (status, answered) == (200, body)
    grown = peak - idle
    print(
        f"\nstalled uploads: idle {idle / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB "
        f"(+{grown / MIB:.1f} MiB)"
    )
    assert grown <= STORE_BYTES + INFLIGHT_BYTES + FIXED_OVERHEAD, grown / MIB
