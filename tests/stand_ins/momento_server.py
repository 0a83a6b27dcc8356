"""A Momento-protocol gRPC server on 127.0.0.1, for the real `momento` SDK to talk to.

It runs as a subprocess (`python -m tests.stand_ins.momento_server`) so that its event loop and
its share of the CPU never distort the client under test or under benchmark. The parent drives it
through `MomentoStandIn`: reset, count calls, switch faults on and off, and change the expected
API key, all at run time over a small HTTP control port on 127.0.0.1.

Served (on the servicer bases of `momento-wire-types`): `Scs.Get`, `Scs.Set` (with TTL),
`Scs.SetIfNotExists` (stores only when no live item has the key), `Scs.Delete` (counting how
many are answered at once), `ScsControl.CreateCache`,
`DeleteCache`, `ListCaches`, `FlushCache`, and the topics the SDK's `TopicClientAsync` uses,
`Pubsub.Publish` and `Pubsub.Subscribe` (a heartbeat first, then every item published to the
topic in its cache, numbered from 1; a subscription that resumes at a number first gets the
items after it that are still kept, the last 100 per topic; `drop_subscriptions` ends every live
one with UNAVAILABLE, as a lost connection would). Every other RPC answers UNIMPLEMENTED.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["MomentoStandIn"]

HOST = "127.0.0.1"
# Momento's own limits, enforced here too so that a client bug would show up as a server error.
MAX_ITEM_BYTES = 5 * 1024 * 1024
MAX_TTL_MILLISECONDS = 24 * 60 * 60 * 1000


# -- the parent's handle ------------------------------------------------------------------------


class MomentoStandIn:
    """Starts the server in a subprocess and controls it.

    Args:
        api_key: The `authorization` value every call must carry; None accepts any (the SDK's
            `for_momento_local` provider sends an empty one).
    """

    def __init__(self, api_key: str | None = None) -> None:
        self._initial_api_key = api_key
        self._process: subprocess.Popen[str] | None = None
        self.port = 0
        self.control_port = 0

    def start(self, timeout: float = 30.0) -> MomentoStandIn:
        """Start the subprocess and wait until it serves."""
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        environment = {
            **os.environ,
            "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        command = [sys.executable, "-m", "tests.stand_ins.momento_server"]
        if self._initial_api_key is not None:
            command += ["--api-key", self._initial_api_key]
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, cwd=root, env=environment
        )
        assert self._process.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self._process.stdout.readline()
            if line.startswith("READY") or not line:
                break
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"the Momento stand-in did not start: {line!r}")
        _, port, control_port = line.split()
        self.port, self.control_port = int(port), int(control_port)
        return self

    def stop(self) -> None:
        """Stop the subprocess this handle started."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> MomentoStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """`host:port`, as the `endpoint=` option of a `momento://` URL takes it."""
        return f"{HOST}:{self.port}"

    def url(self, cache_name: str, **options: object) -> str:
        """A `momento://` URL for this server."""
        query = "&".join(
            f"{name}={value}" for name, value in {"endpoint": self.endpoint, **options}.items()
        )
        return f"momento://{cache_name}?{query}"

    def reset(self, caches: Iterable[str] = ()) -> None:
        """Forget every cache, call and fault; then create `caches`."""
        self._control("reset", {"caches": list(caches), "api_key": self._initial_api_key})

    def calls(self) -> collections.Counter[str]:
        """RPCs received since the last reset, by method (`Get`, `Set`, `CreateCache`, ...)."""
        return collections.Counter(self._control("calls", {}))

    def count(self, method: str | None = None) -> int:
        """RPCs received for `method`, or all of them."""
        calls = self.calls()
        return sum(calls.values()) if method is None else calls[method]

    def clear_calls(self) -> None:
        self._control("clear_calls", {})

    def peak_in_flight(self) -> int:
        """The most Get, Set and Delete calls answered at once since the last reset or clear."""
        result: int = self._control("peak_in_flight", {})
        return result

    def fault(
        self,
        status: str | None = None,
        *,
        delay: float = 0.0,
        methods: Iterable[str] | None = None,
        details: str = "injected fault",
    ) -> None:
        """Answer calls with a gRPC `status` (e.g. `"UNAVAILABLE"`) and/or after `delay` seconds.

        Args:
            status: A `grpc.StatusCode` name, or None to answer normally (after `delay`).
            delay: Seconds to wait before answering.
            methods: Only these methods (all if None).
            details: The status details sent with `status`.
        """
        self._control(
            "fault",
            {
                "status": status,
                "delay": delay,
                "methods": None if methods is None else list(methods),
                "details": details,
            },
        )

    def clear_faults(self) -> None:
        self.fault(None)

    def drop_subscriptions(self) -> int:
        """End every live topic subscription with UNAVAILABLE; returns how many there were."""
        result: int = self._control("drop_subscriptions", {})
        return result

    def subscribers(self) -> int:
        """Live topic subscriptions."""
        result: int = self._control("subscribers", {})
        return result

    def require_api_key(self, api_key: str | None) -> None:
        """Expect `api_key` in the `authorization` header from now on (None: accept any)."""
        self._control("api_key", {"api_key": api_key})

    def items(self, cache_name: str) -> dict[str, int]:
        """The live keys of a cache (decoded as UTF-8) with their remaining TTL in milliseconds."""
        result: dict[str, int] = self._control("items", {"cache": cache_name})
        return result

    def _control(self, command: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"http://{HOST}:{self.control_port}/{command}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")


# -- the server (runs in the subprocess) --------------------------------------------------------


class _State:
    """Everything the server knows; shared by the gRPC loop and the control thread."""

    def __init__(self, api_key: str | None) -> None:
        self.lock = threading.Lock()
        self.api_key = api_key
        # cache name -> key -> (value, monotonic expiry)
        self.caches: dict[str, dict[bytes, tuple[bytes, float]]] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        # Data calls being answered now, and the most there have been at once since the reset.
        self.in_flight = 0
        self.peak_in_flight = 0
        # Bumped by each reset: topics of an older epoch are forgotten.
        self.epoch = 0
        self.status: str | None = None
        self.delay = 0.0
        self.methods: set[str] | None = None
        self.details = ""
        # Set by the server: runs a callable on the gRPC loop and waits for its result.
        self.on_loop: Callable[[Callable[[], Any]], Any] = lambda function: function()
        # Commands that touch the gRPC loop's topics, run there through `on_loop`.
        self.commands: dict[str, Callable[[], Any]] = {}

    def reset(self, caches: list[str], api_key: str | None) -> None:
        with self.lock:
            self.caches = {name: {} for name in caches}
            self.epoch += 1
            self.calls.clear()
            self.peak_in_flight = self.in_flight
            self.status, self.delay, self.methods, self.details = None, 0.0, None, ""
            self.api_key = api_key


# Put in a subscriber's queue: end that subscription.
_DROP: tuple[int, Any] = (-1, None)


class _Topic:
    """One topic: its last items and the queues of its live subscriptions (gRPC loop only)."""

    KEPT = 100

    def __init__(self) -> None:
        self.sequence = 0
        self.items: collections.deque[tuple[int, Any]] = collections.deque(maxlen=self.KEPT)
        self.subscribers: set[asyncio.Queue[tuple[int, Any]]] = set()

    def publish(self, value: Any) -> None:
        self.sequence += 1
        item = (self.sequence, value)
        self.items.append(item)
        for queue in self.subscribers:
            queue.put_nowait(item)


def _servicers(state: _State) -> tuple[Any, Any, Any]:
    import grpc
    from momento_wire_types import cacheclient_pb2 as cache_pb
    from momento_wire_types import cacheclient_pb2_grpc as cache_grpc
    from momento_wire_types import cachepubsub_pb2 as pubsub_pb
    from momento_wire_types import cachepubsub_pb2_grpc as pubsub_grpc
    from momento_wire_types import common_pb2 as common_pb
    from momento_wire_types import controlclient_pb2 as control_pb
    from momento_wire_types import controlclient_pb2_grpc as control_grpc

    # (epoch, cache name, topic name) -> topic; touched only on the gRPC event loop.
    topics: dict[tuple[int, str, str], _Topic] = {}

    def live_queues() -> list[asyncio.Queue[tuple[int, Any]]]:
        return [queue for topic in topics.values() for queue in topic.subscribers]

    def drop_subscriptions() -> int:
        queues = live_queues()
        for queue in queues:
            queue.put_nowait(_DROP)
        return len(queues)

    state.commands = {
        "drop_subscriptions": drop_subscriptions,
        "subscribers": lambda: len(live_queues()),
    }

    async def admit(method: str, context: Any) -> None:
        """Count the call, then apply auth and any injected fault."""
        with state.lock:
            state.calls[method] += 1
            api_key = state.api_key
            applies = state.methods is None or method in state.methods
            status, delay, details = state.status, state.delay, state.details
        metadata = dict(context.invocation_metadata() or ())
        if api_key is not None and metadata.get("authorization") != api_key:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "Invalid signature")
        if applies and delay:
            await asyncio.sleep(delay)
        if applies and status is not None:
            await context.abort(getattr(grpc.StatusCode, status), details)

    @contextlib.contextmanager
    def answering() -> Iterator[None]:
        with state.lock:
            state.in_flight += 1
            state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
        try:
            yield
        finally:
            with state.lock:
                state.in_flight -= 1

    async def cache_of(context: Any) -> dict[bytes, tuple[bytes, float]]:
        name = dict(context.invocation_metadata() or ()).get("cache", "")
        with state.lock:
            cache = state.caches.get(name)
        if cache is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Cache not found: {name}")
        assert cache is not None
        return cache

    def unimplemented(name: str) -> Callable[..., Any]:
        async def answer(self: Any, request: Any, context: Any) -> Any:
            with state.lock:
                state.calls[name] += 1
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented")

        answer.__name__ = name
        return answer

    def completed(base: type, implemented: dict[str, Callable[..., Any]]) -> type:
        # The generated bases answer with a sync NotImplementedError, which grpc.aio reports as
        # UNKNOWN; every method not served here must say UNIMPLEMENTED instead.
        members: dict[str, Any] = {
            name: unimplemented(name)
            for name in vars(base)
            if not name.startswith("_") and callable(getattr(base, name))
        }
        members.update(implemented)
        return type(f"StandIn{base.__name__}", (base,), members)

    async def get(self: Any, request: Any, context: Any) -> Any:
        with answering():
            return await get_answer(request, context)

    async def get_answer(request: Any, context: Any) -> Any:
        await admit("Get", context)
        cache = await cache_of(context)
        with state.lock:
            item = cache.get(request.cache_key)
            if item is not None and item[1] <= time.monotonic():
                del cache[request.cache_key]
                item = None
        if item is None:
            return cache_pb._GetResponse(result=cache_pb.Miss)
        return cache_pb._GetResponse(result=cache_pb.Hit, cache_body=item[0])

    async def set_(self: Any, request: Any, context: Any) -> Any:
        with answering():
            return await set__answer(request, context)

    async def set__answer(request: Any, context: Any) -> Any:
        await admit("Set", context)
        cache = await cache_of(context)
        if len(request.cache_key) + len(request.cache_body) > MAX_ITEM_BYTES:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "Item size exceeds the limit")
        if not 0 < request.ttl_milliseconds <= MAX_TTL_MILLISECONDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "TTL exceeds the limit")
        expiry = time.monotonic() + request.ttl_milliseconds / 1000
        with state.lock:
            cache[request.cache_key] = (request.cache_body, expiry)
        return cache_pb._SetResponse(result=cache_pb.Ok)

    async def set_if_not_exists(self: Any, request: Any, context: Any) -> Any:
        with answering():
            return await set_if_not_exists_answer(request, context)

    async def set_if_not_exists_answer(request: Any, context: Any) -> Any:
        await admit("SetIfNotExists", context)
        cache = await cache_of(context)
        if len(request.cache_key) + len(request.cache_body) > MAX_ITEM_BYTES:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "Item size exceeds the limit")
        if not 0 < request.ttl_milliseconds <= MAX_TTL_MILLISECONDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "TTL exceeds the limit")
        now = time.monotonic()
        with state.lock:
            # Checked and stored under one lock: of concurrent callers, exactly one stores.
            item = cache.get(request.cache_key)
            stored = item is None or item[1] <= now
            if stored:
                cache[request.cache_key] = (
                    request.cache_body,
                    now + request.ttl_milliseconds / 1000,
                )
        answer = cache_pb._SetIfNotExistsResponse
        if stored:
            return answer(stored=answer._Stored())
        return answer(not_stored=answer._NotStored())

    async def delete(self: Any, request: Any, context: Any) -> Any:
        with answering():
            return await delete_answer(request, context)

    async def delete_answer(request: Any, context: Any) -> Any:
        await admit("Delete", context)
        cache = await cache_of(context)
        with state.lock:
            cache.pop(request.cache_key, None)
        return cache_pb._DeleteResponse()

    async def create_cache(self: Any, request: Any, context: Any) -> Any:
        await admit("CreateCache", context)
        with state.lock:
            exists = request.cache_name in state.caches
            if not exists:
                state.caches[request.cache_name] = {}
        if exists:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "Cache already exists")
        return control_pb._CreateCacheResponse()

    async def delete_cache(self: Any, request: Any, context: Any) -> Any:
        await admit("DeleteCache", context)
        with state.lock:
            found = state.caches.pop(request.cache_name, None) is not None
        if not found:
            await context.abort(grpc.StatusCode.NOT_FOUND, "Cache not found")
        return control_pb._DeleteCacheResponse()

    async def list_caches(self: Any, request: Any, context: Any) -> Any:
        await admit("ListCaches", context)
        with state.lock:
            names = sorted(state.caches)
        return control_pb._ListCachesResponse(
            cache=[control_pb._Cache(cache_name=name) for name in names]
        )

    async def flush_cache(self: Any, request: Any, context: Any) -> Any:
        await admit("FlushCache", context)
        with state.lock:
            cache = state.caches.get(request.cache_name)
            if cache is not None:
                cache.clear()
        if cache is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "Cache not found")
        return control_pb._FlushCacheResponse()

    async def topic_of(request: Any, context: Any) -> _Topic:
        with state.lock:
            exists = request.cache_name in state.caches
            epoch = state.epoch
        if not exists:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Cache not found: {request.cache_name}")
        key = (epoch, request.cache_name, request.topic)
        topic = topics.get(key)
        if topic is None:
            topic = topics[key] = _Topic()
        return topic

    async def publish(self: Any, request: Any, context: Any) -> Any:
        await admit("Publish", context)
        topic = await topic_of(request, context)
        topic.publish(request.value)
        return common_pb._Empty()

    async def subscribe(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
        await admit("Subscribe", context)
        topic = await topic_of(request, context)
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        resume_at = request.resume_at_topic_sequence_number
        if resume_at:
            for item in topic.items:
                if item[0] > resume_at:
                    queue.put_nowait(item)
        topic.subscribers.add(queue)
        try:
            yield pubsub_pb._SubscriptionItem(heartbeat=pubsub_pb._Heartbeat())
            while True:
                sequence, value = await queue.get()
                if sequence == _DROP[0]:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "subscription dropped")
                yield pubsub_pb._SubscriptionItem(
                    item=pubsub_pb._TopicItem(topic_sequence_number=sequence, value=value)
                )
        finally:
            topic.subscribers.discard(queue)

    data = completed(
        cache_grpc.ScsServicer,
        {"Get": get, "Set": set_, "SetIfNotExists": set_if_not_exists, "Delete": delete},
    )
    pubsub = completed(pubsub_grpc.PubsubServicer, {"Publish": publish, "Subscribe": subscribe})
    control = completed(
        control_grpc.ScsControlServicer,
        {
            "CreateCache": create_cache,
            "DeleteCache": delete_cache,
            "ListCaches": list_caches,
            "FlushCache": flush_cache,
        },
    )
    return data(), control(), pubsub()


class _ControlHandler(BaseHTTPRequestHandler):
    state: _State

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        result = self._handle(self.path.strip("/"), body)
        payload = json.dumps(result).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _handle(self, command: str, body: dict[str, Any]) -> Any:
        state = self.state
        if command == "reset":
            state.reset(body.get("caches", []), body.get("api_key"))
            return None
        if command in state.commands:
            return state.on_loop(state.commands[command])
        with state.lock:
            if command == "calls":
                return dict(state.calls)
            if command == "peak_in_flight":
                return state.peak_in_flight
            if command == "clear_calls":
                state.calls.clear()
            elif command == "fault":
                state.status, state.delay = body.get("status"), float(body.get("delay") or 0)
                methods = body.get("methods")
                state.methods = None if methods is None else set(methods)
                state.details = body.get("details") or "injected fault"
            elif command == "api_key":
                state.api_key = body.get("api_key")
            elif command == "items":
                now = time.monotonic()
                cache = state.caches.get(body["cache"], {})
                return {
                    key.decode("utf-8", "replace"): int((expiry - now) * 1000)
                    for key, (_, expiry) in cache.items()
                    if expiry > now
                }
        return None


async def serve(api_key: str | None, port: int = 0) -> None:
    """Serve until terminated, printing `READY <grpc port> <control port>` once listening."""
    import grpc
    from momento_wire_types import cacheclient_pb2_grpc as cache_grpc
    from momento_wire_types import cachepubsub_pb2_grpc as pubsub_grpc
    from momento_wire_types import controlclient_pb2_grpc as control_grpc

    state = _State(api_key)
    loop = asyncio.get_running_loop()

    def on_loop(function: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=10)

    state.on_loop = on_loop
    data, control, pubsub = _servicers(state)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
        ]
    )
    # The generated registration functions are untyped.
    registrations: list[tuple[Any, Any]] = [
        (cache_grpc.add_ScsServicer_to_server, data),
        (control_grpc.add_ScsControlServicer_to_server, control),
        (pubsub_grpc.add_PubsubServicer_to_server, pubsub),
    ]
    for register, servicer in registrations:
        register(servicer, server)
    bound = server.add_insecure_port(f"{HOST}:{port}")
    await server.start()

    handler = type("Handler", (_ControlHandler,), {"state": state})
    http = ThreadingHTTPServer((HOST, 0), handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print(f"READY {bound} {http.server_address[1]}", flush=True)

    stop = asyncio.Event()
    import signal

    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    parent = os.getppid()

    async def orphaned() -> None:
        # A parent that died without stopping us (a killed test run) must not leave us behind.
        while os.getppid() == parent:  # noqa: ASYNC110 - no event announces a parent death
            await asyncio.sleep(1.0)
        stop.set()

    watchdog = asyncio.ensure_future(orphaned())
    await stop.wait()
    watchdog.cancel()
    http.shutdown()
    await server.stop(grace=0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-key", default=None, help="expected authorization header")
    parser.add_argument("--port", type=int, default=0, help="gRPC port (0: a free one)")
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(arguments.api_key, arguments.port))


if __name__ == "__main__":
    main()
