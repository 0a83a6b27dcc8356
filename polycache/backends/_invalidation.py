"""Invalidation across processes: near-caches sharing one backend announce the keys they replace.

A backend that can push (`PushBackend`: Momento Topics, Redis pub/sub) offers a `PushTransport`
that moves bytes; `InvalidationChannel` does the rest, the same for every backend: the message
format, skipping this channel's own messages, publishing in the background, subscribing on each
event loop (`LoopBound`), and subscribing again after a drop, with backoff. Its `session` tells
the near-cache whether it can currently trust what it holds: a number that changes with every
new subscription, and is `DISCONNECTED` while there is none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Final

from polycache._contracts import PushSubscription, PushTransport
from polycache._loop_bound import LoopBound

__all__ = [
    "DEFAULT_PUBLISH_TIMEOUT",
    "DEFAULT_RECONNECT_MAX",
    "DEFAULT_SUBSCRIBE_TIMEOUT",
    "DISCONNECTED",
    "MAX_MESSAGE_BYTES",
    "InvalidationChannel",
    "decode",
    "encode",
]

DISCONNECTED: Final = 0
"""The `session` while no subscription is live; live sessions are numbered from 1."""
MAX_MESSAGE_BYTES: Final = 32 * 1024
"""Keys are split over several messages above this size (Momento Topics take up to 5 MiB)."""
DEFAULT_PUBLISH_TIMEOUT: Final = 1.0
"""Seconds one message may take to publish, retries included."""
DEFAULT_SUBSCRIBE_TIMEOUT: Final = 5.0
"""Seconds one attempt to subscribe may take."""
DEFAULT_RECONNECT_MAX: Final = 5.0
"""The longest pause between attempts to subscribe again."""
_RECONNECT_FIRST: Final = 0.05
# A session that lasted this long was not a flapping connection: the backoff starts over.
_STABLE_SESSION: Final = 1.0
_PUBLISH_ATTEMPTS: Final = 3
_VERSION: Final = 1

logger = logging.getLogger("polycache")

Invalidate = Callable[[tuple[str, ...] | None], None]
"""Called with the keys another process replaced, or None for all of them (a `clear`)."""


def encode(origin: str, keys: Iterable[str] | None) -> list[bytes]:
    """The messages that announce `keys` (None: every key), each at most `MAX_MESSAGE_BYTES`.

    A key longer than the limit goes alone in a message of its own.
    """
    if keys is None:
        return [json.dumps({"v": _VERSION, "origin": origin, "all": True}).encode()]
    messages: list[bytes] = []
    chunk: list[str] = []
    size = 0
    for key in keys:
        key_size = len(json.dumps(key)) + 2
        if chunk and size + key_size > MAX_MESSAGE_BYTES:
            messages.append(_keys_message(origin, chunk))
            chunk, size = [], 0
        chunk.append(key)
        size += key_size
    if chunk:
        messages.append(_keys_message(origin, chunk))
    return messages


def _keys_message(origin: str, keys: list[str]) -> bytes:
    return json.dumps({"v": _VERSION, "origin": origin, "keys": keys}).encode()


def decode(message: bytes) -> tuple[str, tuple[str, ...] | None] | None:
    """`(origin, keys)` of a message, keys None for every key; None if it is not one of ours."""
    try:
        document = json.loads(message)
    except ValueError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("origin"), str):
        return None
    origin: str = document["origin"]
    if document.get("all") is True:
        return origin, None
    keys = document.get("keys")
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        return None
    return origin, tuple(keys)


class InvalidationChannel:
    """Publishes the keys this process replaced, and hands over those other processes replaced.

    Publishing never delays the caller: keys are gathered and sent by one background task per
    event loop, several keys to a message, each message bounded by `publish_timeout` (a message
    that cannot be sent is logged and counted in `publish_failures`). Receiving runs in one
    task per event loop, started by `listen` and subscribing again, with backoff, whenever the
    subscription drops; a new event loop (`asyncio.run` per invocation) subscribes anew.

    Args:
        transport: The backend's push transport.
        invalidate: Called with the keys another process replaced (None: all of them).
        on_session: Called with the new `session` whenever it changes.
        publish_timeout: Seconds one message may take to publish, retries included.
        subscribe_timeout: Seconds one attempt to subscribe may take.
        reconnect_max: The longest pause between attempts to subscribe again.
    """

    __slots__ = (
        "_invalidate",
        "_listener",
        "_on_session",
        "_origin",
        "_pending",
        "_pending_all",
        "_pid",
        "_publish_timeout",
        "_publishing",
        "_reconnect_max",
        "_sessions",
        "_subscribe_timeout",
        "_transport",
        "publish_failures",
        "session",
    )

    def __init__(
        self,
        transport: PushTransport,
        *,
        invalidate: Invalidate,
        on_session: Callable[[int], None],
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
        subscribe_timeout: float = DEFAULT_SUBSCRIBE_TIMEOUT,
        reconnect_max: float = DEFAULT_RECONNECT_MAX,
    ) -> None:
        self._transport = transport
        self._invalidate = invalidate
        self._on_session = on_session
        self._publish_timeout = publish_timeout
        self._subscribe_timeout = subscribe_timeout
        self._reconnect_max = reconnect_max
        self._pid = os.getpid()
        self._origin = f"{self._pid}-{secrets.token_hex(8)}"
        self._pending: dict[str, None] = {}  # a set that keeps the order keys were written in
        self._pending_all = False
        self._publishing: asyncio.Task[None] | None = None
        self._listener: LoopBound[asyncio.Task[None]] = LoopBound(self._start, _stop)
        self._sessions = DISCONNECTED
        self.session = DISCONNECTED
        self.publish_failures = 0

    def __repr__(self) -> str:
        return f"InvalidationChannel({self._transport!r}, connected={self.connected})"

    @property
    def connected(self) -> bool:
        """True while a subscription is live: other processes' messages reach this one."""
        return self.session != DISCONNECTED

    @property
    def origin(self) -> str:
        """This channel's id, carried by its messages so that it can skip its own."""
        pid = os.getpid()
        if pid != self._pid:  # a forked child is another process: it must hear its parent
            self._pid = pid
            self._origin = f"{pid}-{secrets.token_hex(8)}"
        return self._origin

    async def listen(self) -> None:
        """Make sure this event loop's receiving task runs (cheap when it does)."""
        await self._listener.get()

    def publish(self, keys: Iterable[str]) -> None:
        """Announce `keys` to the other processes, in the background."""
        if not self._pending_all:
            self._pending.update(dict.fromkeys(keys))
        self._kick()

    def publish_all(self) -> None:
        """Announce that every key was dropped (a `clear`), in the background."""
        self._pending_all = True
        self._pending.clear()
        self._kick()

    async def flush(self) -> None:
        """Wait until what was published so far is sent (or has failed), on this loop."""
        task = self._publishing
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([task])

    async def aclose(self) -> None:
        """Send what is pending (bounded by `publish_timeout`), stop receiving, disconnect."""
        await self.flush()
        await self._listener.aclose()
        await self._transport.aclose()

    # -- publishing

    def _kick(self) -> None:
        task = self._publishing
        loop = asyncio.get_running_loop()
        if task is None or task.done() or task.get_loop() is not loop:
            self._publishing = loop.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending or self._pending_all:
            keys = None if self._pending_all else list(self._pending)
            self._pending = {}
            self._pending_all = False
            try:
                for message in encode(self.origin, keys):
                    await self._send(message)
            except asyncio.CancelledError:
                # Only the loop's shutdown cancels this task (asyncio.run returning after a
                # handler's last write): what was written is still announced, once more and
                # within publish_timeout, before the loop goes.
                if keys is None:
                    self._pending_all = True
                elif not self._pending_all:
                    self._pending.update(dict.fromkeys(keys))
                await self._last_flush()
                raise

    async def _last_flush(self) -> None:
        keys = None if self._pending_all else list(self._pending)
        self._pending = {}
        self._pending_all = False
        if not self._transport.connected():
            # Opening a connection while the loop shuts down is not safe (gRPC's aio channel
            # can crash the process): without one, the others fall back to local_ttl.
            self.publish_failures += 1
            logger.warning(
                "polycache: an invalidation was not published: the event loop ended with no "
                "connection to publish on"
            )
            return
        try:
            async with asyncio.timeout(self._publish_timeout):
                for message in encode(self.origin, keys):
                    await self._transport.publish(message)
        except Exception as exc:  # the transport's failure, or the timeout
            self.publish_failures += 1
            logger.warning(
                "polycache: could not publish an invalidation as the event loop ended (%s)",
                _describe(exc),
            )

    async def _send(self, message: bytes) -> None:
        try:
            async with asyncio.timeout(self._publish_timeout):
                for attempt in range(1, _PUBLISH_ATTEMPTS + 1):
                    try:
                        await self._transport.publish(message)
                    except Exception:
                        if attempt == _PUBLISH_ATTEMPTS:
                            raise
                        await asyncio.sleep(0.02 * attempt)
                    else:
                        return
        except Exception as exc:  # the transport's failure, or the timeout
            self.publish_failures += 1
            logger.warning(
                "polycache: could not publish an invalidation (%s); other processes keep "
                "their near copies until those expire",
                _describe(exc),
            )

    # -- receiving

    async def _start(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._receive())

    async def _receive(self) -> None:
        delay = _RECONNECT_FIRST
        failures = 0
        while True:
            try:
                async with asyncio.timeout(self._subscribe_timeout):
                    subscription = await self._transport.subscribe()
            except Exception as exc:  # the transport's failure, or the timeout
                failures += 1
                (logger.warning if failures == 1 else logger.debug)(
                    "polycache: cannot subscribe to invalidations (%s); near copies are kept at "
                    "most local_ttl until it works",
                    _describe(exc),
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                delay = min(delay * 2, self._reconnect_max)
                continue
            if failures:
                logger.info("polycache: subscribed to invalidations again")
            failures = 0
            started = time.monotonic()
            await self._session(subscription)
            if time.monotonic() - started >= _STABLE_SESSION:
                delay = _RECONNECT_FIRST
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
            delay = min(delay * 2, self._reconnect_max)

    async def _session(self, subscription: PushSubscription) -> None:
        """Hand over messages until the subscription ends; trust ends with it."""
        self._sessions += 1
        self._set_session(self._sessions)
        try:
            while True:
                message = await subscription.receive()
                if message is not None:
                    self._deliver(message)
        except Exception as exc:  # the subscription ended: subscribe again
            logger.debug("polycache: the invalidation subscription ended: %r", exc)
        finally:
            self._set_session(DISCONNECTED)
            await subscription.aclose()

    def _set_session(self, session: int) -> None:
        self.session = session
        self._on_session(session)

    def _deliver(self, message: bytes) -> None:
        decoded = decode(message)
        if decoded is None:
            # Someone else's message on our topic, or a newer format: nothing held can be
            # trusted to be current, so drop it all rather than guess.
            logger.warning("polycache: an unreadable invalidation message; dropping near copies")
            self._invalidate(None)
            return
        origin, keys = decoded
        if origin != self.origin:
            self._invalidate(keys)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait([task])
