"""The extension's HTTP API, an `aiohttp.web` application.

| method and path | answer |
|---|---|
| `GET /health`, `GET /ping` | `{"status": "ok", ...}` |
| `GET /v1/kv/{key}` | the stored bytes, their `Content-Type`, freshness in `X-Polycache-*` |
| `PUT /v1/kv/{key}` | store the body and its type (freshness from headers, or `?ttl=`); 204 |
| `PUT` with `If-None-Match: *` | store only if the key holds no live entry: 204, else 412 |
| `DELETE /v1/kv/{key}`, `DELETE /v1/kv` | forget one key, or every key; 204 |
| `GET /parameters?name=` | the sample's: a parameter's decrypted value, as text |
| `GET /dynamodb?name=` | the sample's: a `config.yaml` item as JSON |
| `GET /systemsmanager/parameters/get?name=` | GetParameter's JSON |
| `GET /secretsmanager/get?secretId=` | GetSecretValue's JSON |

Keys in paths are percent-encoded UTF-8 (the client encodes every byte). Errors answer
`{"error": CODE, "message": TEXT}` with 400, 403, 404, 405, 408, 412, 413, 502, 503 or 504.
No answer and no log line holds a value, a header value or a token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from polycache import _extension_wire as wire
from polycache._contracts import Entry
from polycache._errors import ConfigurationError, LoaderError, SourceNotFound
from polycache.extension._server import Connection
from polycache.extension._settings import ExtensionSettings
from polycache.extension._sources import ReadThrough, SourceRejected, SourceTimeout, refusal
from polycache.extension._store import Store

__all__ = ["BodyBudget", "Status", "create_app"]

logger = logging.getLogger("polycache.extension")

_DEFAULT_TYPE: Final = "application/octet-stream"
_MAX_TYPE_LENGTH: Final = 255
_BOOLEANS: Final = {"true": True, "false": False}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Status:
    """What `/health` reports; the lifecycle loop updates it.

    Attributes:
        invokes: INVOKE events received.
        registered: Registered with the Lambda Extensions API (False when standalone).
        prefetched: The `config.yaml` list has been loaded (or there was none).
    """

    __slots__ = ("invokes", "prefetched", "registered")

    def __init__(self) -> None:
        self.invokes = 0
        self.registered = False
        self.prefetched = False


class BodyBudget:
    """The bytes of request bodies all requests may hold at once.

    A request reserves its body's length before reading it, and is refused (503) when the
    budget cannot cover it, so that stalled or concurrent uploads cannot take the process's
    memory past its bound.

    Args:
        limit: The bytes all bodies being received may hold together.
    """

    __slots__ = ("available", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.available = limit

    def reserve(self, size: int) -> bool:
        """Take `size` bytes; False (and nothing taken) if fewer are left."""
        if size > self.available:
            return False
        self.available -= size
        return True

    def release(self, size: int) -> None:
        """Give back bytes taken by `reserve`."""
        self.available += size


@dataclass(frozen=True, slots=True)
class _Services:
    settings: ExtensionSettings
    store: Store
    reads: ReadThrough
    status: Status
    clock: Callable[[], float]
    bodies: BodyBudget


_SERVICES: Final = web.AppKey("services", _Services)


class _RequestError(Exception):
    """Answer the request with an error (raised from anywhere inside a handler)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


# -- middleware ------------------------------------------------------------------------------


def _guard(token: str | None) -> Middleware:
    expected = token.encode() if token else None

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        # A forwarded request came through something that reached into the sandbox: SSRF.
        if "X-Forwarded-For" in request.headers:
            return _error(403, "forwarded", "requests with X-Forwarded-For are refused")
        if expected is not None:
            given = request.headers.get(wire.TOKEN_HEADER, "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected):
                return _error(403, "token", f"missing or wrong {wire.TOKEN_HEADER} header")
        connection = request.protocol
        if isinstance(connection, Connection):
            # Served now: not the one to close when a new connection needs the room.
            connection.busy = True
        try:
            return await handler(request)
        except _RequestError as refused:
            return _error(refused.status, refused.code, refused.message)
        except web.HTTPException as exc:
            # The router's 404 and 405, aiohttp's 413: the same JSON body as ours.
            codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
            code = codes.get(exc.status, "bad_request" if exc.status < 500 else "error")
            return _error(exc.status, code, exc.reason)
        finally:
            if isinstance(connection, Connection):
                connection.busy = False

    return guard


# -- helpers ---------------------------------------------------------------------------------


def _query(request: web.Request, name: str, *, required: bool = False) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise _RequestError(400, "bad_request", f"query parameter {name!r} is given twice")
    value = values[0] if values else None
    if required and not value:
        raise _RequestError(400, "bad_request", f"query parameter {name!r} is required")
    return value or None


def _boolean(request: web.Request, name: str) -> bool:
    raw = _query(request, name)
    if raw is None:
        return False
    value = _BOOLEANS.get(raw.lower())
    if value is None:
        raise _RequestError(400, "bad_request", f"query parameter {name!r} must be true or false")
    return value


def _key(request: web.Request) -> str:
    # The raw path, as sent: no URL rule has decoded or normalised it.
    try:
        return wire.decode_key(request.rel_url.raw_path[len(wire.KV_PATH) :])
    except ValueError as exc:
        raise _RequestError(400, "bad_request", str(exc)) from None


def _epoch(request: web.Request, header: str) -> float | None:
    raw = request.headers.get(header)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _RequestError(400, "bad_request", f"{header} must be epoch seconds") from None
    if math.isnan(value):
        raise _RequestError(400, "bad_request", f"{header} must be epoch seconds")
    return value


def _services(request: web.Request) -> _Services:
    return request.app[_SERVICES]


async def _loaded(what: str, load: Awaitable[bytes | str]) -> bytes | str:
    try:
        return await load
    except SourceNotFound as exc:
        raise _RequestError(404, "not_found", str(exc)) from exc
    except LoaderError as exc:
        kind = refusal(exc)
        if kind is SourceRejected:
            raise _RequestError(400, "bad_request", f"{what}: AWS rejected the request") from exc
        cause = exc.__cause__
        reason = str(exc) if cause is None else f"{exc} ({type(cause).__name__})"
        logger.warning("polycache-extension: %s", reason)
        if kind is SourceTimeout:
            raise _RequestError(504, "source_timeout", f"{what}: the source timed out") from exc
        raise _RequestError(502, "source_error", f"{what}: the source failed") from exc
    except ConfigurationError as exc:
        raise _RequestError(400, "bad_request", str(exc)) from exc


# -- handlers --------------------------------------------------------------------------------


async def _health(request: web.Request) -> web.Response:
    services = _services(request)
    return web.json_response(
        {
            "status": "ok",
            "entries": len(services.store),
            "bytes": services.store.size,
            "invokes": services.status.invokes,
            "registered": services.status.registered,
            "prefetched": services.status.prefetched,
            "max_item_bytes": services.settings.max_item_bytes,
        }
    )


async def _get_value(request: web.Request) -> web.Response:
    services = _services(request)
    held = services.store.get(_key(request))
    if held is None:
        return _error(404, "not_found", "no such key")
    entry, content_type = held
    headers = wire.entry_headers(entry)
    headers["Content-Type"] = content_type
    return web.Response(body=entry.value, headers=headers)


async def _put_value(request: web.Request) -> web.Response:
    services = _services(request)
    key = _key(request)
    # A conditional PUT is a lease (set-if-absent): of all the writers, one stores.
    only_if_absent = _only_if_absent(request)
    content_type = request.headers.get("Content-Type", _DEFAULT_TYPE).strip() or _DEFAULT_TYPE
    if len(content_type) > _MAX_TYPE_LENGTH:
        raise _RequestError(
            400, "bad_request", f"Content-Type may have at most {_MAX_TYPE_LENGTH} characters"
        )
    limit = services.settings.max_item_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise _RequestError(413, "too_large", f"a value may have at most {limit} bytes")
    reserved = limit if length is None else length
    if not services.bodies.reserve(reserved):
        raise _RequestError(
            503, "busy", "too many bytes of uploads are being received; try again shortly"
        )
    try:
        value = await _body(request, limit, services.settings.body_timeout)
        entry = _entry(request, value, services.clock())
    finally:
        services.bodies.release(reserved)
    if only_if_absent:
        # Checked after the body arrived, with no await between the check and the write.
        if not services.store.add(key, entry, content_type):
            return _error(412, "exists", "the key holds an entry (If-None-Match: *)")
    elif entry.expires_at > services.clock():
        services.store.put(key, entry, content_type)
    else:
        services.store.delete(key)
    return web.Response(status=204)


def _only_if_absent(request: web.Request) -> bool:
    condition = request.headers.getall("If-None-Match", [])
    if not condition:
        return False
    if condition != ["*"]:
        raise _RequestError(
            400, "bad_request", "If-None-Match takes only *, for a PUT that stores only if absent"
        )
    return True


async def _body(request: web.Request, limit: int, deadline: float) -> bytearray:
    # Read chunk by chunk into one buffer: never more than the reserved length, never longer
    # than the deadline, and no second copy (the store keeps this buffer).
    value = bytearray()
    try:
        async with asyncio.timeout(deadline):
            while chunk := await request.content.readany():
                if len(value) + len(chunk) > limit:
                    raise _RequestError(413, "too_large", f"a value may have at most {limit} bytes")
                value += chunk
    except TimeoutError:
        raise _RequestError(
            408, "timeout", f"the request body did not arrive within {deadline} s"
        ) from None
    return value


def _entry(request: web.Request, value: bytearray, now: float) -> Entry:
    ttl_text = _query(request, "ttl")
    expires_at = _epoch(request, wire.EXPIRES_AT)
    if ttl_text is not None:
        try:
            ttl = float(ttl_text)
        except ValueError:
            raise _RequestError(400, "bad_request", "ttl must be a number of seconds") from None
        if not ttl >= 0:
            raise _RequestError(400, "bad_request", "ttl must be a number of seconds")
        expires_at = now + ttl
    if expires_at is None:
        # Neither a ttl nor a freshness: kept until the store needs the room.
        expires_at = math.inf
    fresh_until = _epoch(request, wire.FRESH_UNTIL)
    stale_until = _epoch(request, wire.STALE_UNTIL)
    fresh_until = expires_at if fresh_until is None else fresh_until
    stale_until = fresh_until if stale_until is None else stale_until
    validator = request.headers.get(wire.VALIDATOR)
    return Entry(
        value=value,
        fresh_until=fresh_until,
        stale_until=stale_until,
        expires_at=expires_at,
        validator=wire.validator_from_header(validator),
        negative=request.headers.get(wire.NEGATIVE) == "1",
    )


async def _delete_value(request: web.Request) -> web.Response:
    _services(request).store.delete(_key(request))
    return web.Response(status=204)


async def _delete_all(request: web.Request) -> web.Response:
    _services(request).store.clear()
    return web.Response(status=204)


async def _parameters(request: web.Request) -> web.Response:
    name = _query(request, "name", required=True)
    assert name is not None
    value = await _loaded(f"parameter {name}", _services(request).reads.parameter_value(name))
    return web.Response(text=str(value), content_type="text/plain")


async def _dynamodb(request: web.Request) -> web.Response:
    name = _query(request, "name", required=True)
    assert name is not None
    body = await _loaded(f"item {name}", _services(request).reads.item(name))
    return web.Response(body=body, content_type="application/json")


async def _systemsmanager(request: web.Request) -> web.Response:
    name = _query(request, "name", required=True)
    assert name is not None
    version = _query(request, "version")
    label = _query(request, "label")
    if version is not None and label is not None:
        raise _RequestError(400, "bad_request", "give a version or a label, not both")
    if version is not None and not version.isdigit():
        raise _RequestError(400, "bad_request", "version must be a positive integer")
    selector = version or label
    if selector is not None:
        name = f"{name}:{selector}"
    decrypt = _boolean(request, "withDecryption")
    body = await _loaded(
        f"parameter {name}", _services(request).reads.parameter(name, decrypt=decrypt)
    )
    return web.Response(body=body, content_type="application/json")


async def _secretsmanager(request: web.Request) -> web.Response:
    secret_id = _query(request, "secretId", required=True)
    assert secret_id is not None
    load = _services(request).reads.secret(
        secret_id,
        version_id=_query(request, "versionId"),
        version_stage=_query(request, "versionStage"),
    )
    body = await _loaded(f"secret {secret_id}", load)
    return web.Response(body=body, content_type="application/json")


def create_app(
    settings: ExtensionSettings,
    reads: ReadThrough,
    *,
    store: Store | None = None,
    status: Status | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """Build the extension's application.

    Args:
        settings: The extension's settings (token, size limits).
        reads: The read-through cache behind the compatibility endpoints.
        store: The key/value store; a new one within the settings' bounds if None.
        status: What `/health` reports; a new one if None.
        clock: Epoch seconds; injectable for tests.
    """
    app = web.Application(middlewares=[_guard(settings.token)])
    app[_SERVICES] = _Services(
        settings=settings,
        store=(
            store
            if store is not None
            else Store(settings.max_entries, settings.max_bytes, clock=clock)
        ),
        reads=reads,
        status=status or Status(),
        clock=clock,
        bodies=BodyBudget(settings.max_inflight_bytes),
    )
    routes: Mapping[str, Mapping[str, Handler]] = {
        "/health": {"GET": _health},
        "/ping": {"GET": _health},
        "/v1/kv": {"DELETE": _delete_all},
        # Any character, newlines included: the key is taken from the raw path, not from here.
        wire.KV_PATH + "{key:[\\s\\S]+}": {
            "GET": _get_value,
            "PUT": _put_value,
            "DELETE": _delete_value,
        },
        "/parameters": {"GET": _parameters},
        "/dynamodb": {"GET": _dynamodb},
        "/systemsmanager/parameters/get": {"GET": _systemsmanager},
        "/secretsmanager/get": {"GET": _secretsmanager},
    }
    for path, methods in routes.items():
        resource = app.router.add_resource(path)
        for method, handler in methods.items():
            resource.add_route(method, handler)
    return app
