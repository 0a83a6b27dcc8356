"""The extension's HTTP API, an `aiohttp.web` application.

| method and path | answer |
|---|---|
| `GET /health`, `GET /ping` | `{"status": "ok", ...}` |
| `GET /v1/kv/{key}` | the value, its freshness in `X-Polycache-*` headers; 404 if absent |
| `PUT /v1/kv/{key}` | store the body (freshness from headers, or `?ttl=`); 204, 413 if too big |
| `DELETE /v1/kv/{key}`, `DELETE /v1/kv` | forget one key, or every key; 204 |
| `GET /parameters?name=` | the sample's: a parameter's decrypted value, as text |
| `GET /dynamodb?name=` | the sample's: a `config.yaml` item as JSON |
| `GET /systemsmanager/parameters/get?name=` | GetParameter's JSON |
| `GET /secretsmanager/get?secretId=` | GetSecretValue's JSON |

Keys in paths are percent-encoded (every byte but unreserved ones). Errors answer
`{"error": CODE, "message": TEXT}` with 400, 403, 404, 405, 413, 502 or 504. No log line holds a
value or a token.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from polycache._contracts import Entry
from polycache._errors import ConfigurationError, LoaderError, SourceNotFound
from polycache.backends._extension_headers import (
    EXPIRES_AT,
    FRESH_UNTIL,
    NEGATIVE,
    STALE_UNTIL,
    VALIDATOR,
    entry_headers,
    validator_from_header,
)
from polycache.extension._settings import ExtensionSettings
from polycache.extension._sources import ReadThrough, SourceRejected, SourceTimeout
from polycache.extension._store import Store

__all__ = [
    "EXPIRES_AT",
    "FRESH_UNTIL",
    "KEY_PREFIX",
    "NEGATIVE",
    "STALE_UNTIL",
    "TOKEN_HEADER",
    "VALIDATOR",
    "Status",
    "create_app",
]

logger = logging.getLogger("polycache.extension")

KEY_PREFIX: Final = "/v1/kv/"
TOKEN_HEADER: Final = "X-Aws-Parameters-Secrets-Token"  # noqa: S105 - a header name

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


@dataclass(frozen=True, slots=True)
class _Services:
    settings: ExtensionSettings
    store: Store
    reads: ReadThrough
    status: Status
    clock: Callable[[], float]


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
            given = request.headers.get(TOKEN_HEADER, "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected):
                return _error(403, "token", f"missing or wrong {TOKEN_HEADER} header")
        try:
            return await handler(request)
        except _RequestError as refused:
            return _error(refused.status, refused.code, refused.message)
        except web.HTTPException as exc:
            # The router's 404 and 405, aiohttp's 413: the same JSON body as ours.
            codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
            code = codes.get(exc.status, "bad_request" if exc.status < 500 else "error")
            return _error(exc.status, code, exc.reason)

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
    raw = request.rel_url.raw_path[len(KEY_PREFIX) :]
    try:
        key = urllib.parse.unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise _RequestError(400, "bad_request", "the key is not percent-encoded UTF-8") from None
    if not key:
        raise _RequestError(400, "bad_request", "the key is empty")
    return key


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


async def _loaded(what: str, load: Awaitable[bytes | str | None]) -> bytes | str:
    try:
        value = await load
    except SourceTimeout as exc:
        logger.warning("polycache-extension: %s", exc)
        raise _RequestError(504, "source_timeout", str(exc)) from exc
    except SourceRejected as exc:
        raise _RequestError(400, "bad_request", str(exc)) from exc
    except SourceNotFound as exc:
        raise _RequestError(404, "not_found", str(exc)) from exc
    except LoaderError as exc:
        cause = exc.__cause__
        reason = str(exc) if cause is None else f"{exc} ({type(cause).__name__})"
        logger.warning("polycache-extension: %s", reason)
        if isinstance(cause, SourceTimeout | TimeoutError):
            raise _RequestError(504, "source_timeout", f"{what}: the source timed out") from exc
        raise _RequestError(502, "source_error", f"{what}: the source failed") from exc
    except ConfigurationError as exc:
        raise _RequestError(400, "bad_request", str(exc)) from exc
    if value is None:
        raise _RequestError(404, "not_found", f"{what} was not found")
    return value


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
    entry = services.store.get(_key(request))
    if entry is None:
        return _error(404, "not_found", "no such key")
    return web.Response(
        body=entry.value, headers=entry_headers(entry), content_type="application/octet-stream"
    )


async def _put_value(request: web.Request) -> web.Response:
    services = _services(request)
    key = _key(request)
    limit = services.settings.max_item_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _RequestError(413, "too_large", f"a value may have at most {limit} bytes")
    value = await request.read()
    if len(value) > limit:
        raise _RequestError(413, "too_large", f"a value may have at most {limit} bytes")
    entry = _entry(request, value, services.clock())
    if entry.expires_at > services.clock():
        services.store.put(key, entry)
    else:
        services.store.delete(key)
    return web.Response(status=204)


def _entry(request: web.Request, value: bytes, now: float) -> Entry:
    ttl_text = _query(request, "ttl")
    expires_at = _epoch(request, EXPIRES_AT)
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
    fresh_until = _epoch(request, FRESH_UNTIL)
    stale_until = _epoch(request, STALE_UNTIL)
    fresh_until = expires_at if fresh_until is None else fresh_until
    stale_until = fresh_until if stale_until is None else stale_until
    validator = request.headers.get(VALIDATOR)
    return Entry(
        value=value,
        fresh_until=fresh_until,
        stale_until=stale_until,
        expires_at=expires_at,
        validator=validator_from_header(validator),
        negative=request.headers.get(NEGATIVE) == "1",
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
    reads = _services(request).reads
    if reads.config.item(name) is None:
        raise _RequestError(404, "not_found", f"{name} is not an item of config.yaml")
    body = await _loaded(f"item {name}", reads.item(name))
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
    app = web.Application(
        middlewares=[_guard(settings.token)],
        # Room for the largest value plus aiohttp's own framing; larger bodies are 413.
        client_max_size=settings.max_item_bytes + 64 * 1024,
    )
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
    )
    routes: Mapping[str, Mapping[str, Handler]] = {
        "/health": {"GET": _health},
        "/ping": {"GET": _health},
        "/v1/kv": {"DELETE": _delete_all},
        KEY_PREFIX + "{key:.+}": {"GET": _get_value, "PUT": _put_value, "DELETE": _delete_value},
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
