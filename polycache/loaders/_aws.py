"""Shared AWS plumbing for the built-in loaders: session, clients, and error translation.

The loaders call AWS through botocore's own clients: one botocore session per process and one
client per service, created on first use and reused by every event loop and invocation
(connection reuse is the first rule of Lambda performance). botocore clients are thread-safe
and bound to no event loop, so each call runs in a small pool of worker threads while the loop
goes on; `asyncio.run()` per invocation needs no rebuilt client. botocore is imported here, and
only when a client is first needed, so that `import polycache` stays cheap on a cold start.
aioboto3 is not used: aiobotocore imports aiohttp unconditionally, which alone costs more than
the whole cold-start budget (see docs/lambda.md, "Cold start").

Every AWS error a loader meets is translated by `translate_error` (through `translating`), so
that "not found" means `SourceNotFound` and everything else `LoaderError` in all the loaders.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import threading
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import Any, Final

from polycache._errors import ConfigurationError, LoaderError, PolycacheError, SourceNotFound

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_ATTEMPTS",
    "MAX_CONCURRENCY",
    "READ_TIMEOUT",
    "AsyncBody",
    "AsyncClient",
    "ClientFactory",
    "client",
    "client_factory",
    "close_clients",
    "error_code",
    "in_thread",
    "renew_session",
    "translate_error",
    "translating",
    "use_session",
]

ClientFactory = Callable[[str], Awaitable[Any]]
"""Returns the client for a service (`"ssm"`); loaders accept one so clients are injectable."""

CONNECT_TIMEOUT: Final = 2.0
"""Seconds to open a connection to an AWS endpoint."""

READ_TIMEOUT: Final = 5.0
"""Seconds to wait for an AWS response; with retries, this bounds every call."""

MAX_ATTEMPTS: Final = 3
"""Attempts per call (botocore's standard retry mode), unless `AWS_MAX_ATTEMPTS` says otherwise."""

MAX_CONCURRENCY: Final = 10
"""AWS calls in flight at once (worker threads), and connections kept per service."""

# Guards the session, the clients and the executor: they are made by whichever thread needs
# them first, and botocore's session is not safe to build clients from concurrently.
_lock = threading.Lock()
_session: Any = None
# Whether _session was built here from the environment (not handed to use_session).
_session_is_default = False
_clients: dict[str, AsyncClient] = {}
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def use_session(session: Any | None) -> None:
    """Use `session` (a `botocore.session.Session`) for every client from now on.

    Clients already made are closed; new ones come from this session. Pass None to go back to
    the default session built from the environment.

    Args:
        session: A `botocore.session.Session` (a named profile, explicit credentials), or None.
    """
    global _session, _session_is_default
    with _lock:
        _session = session
        _session_is_default = False
        stale = list(_clients.values())
        _clients.clear()
    for made in stale:
        made.close()


async def client(service: str) -> AsyncClient:
    """Return the shared client for `service`, creating it on first use.

    The client is made in a worker thread (loading a service model takes milliseconds of
    CPU and file reads) and then shared by every caller, thread and event loop of the process.

    Args:
        service: A botocore service name: `"ssm"`, `"secretsmanager"`, `"s3"`, `"dynamodb"`.

    Returns:
        An `AsyncClient`: botocore's client with each operation awaitable; do not close it.

    Raises:
        ConfigurationError: botocore is not installed.
    """
    made = _clients.get(service)
    if made is not None:
        return made
    created: AsyncClient = await in_thread(_create_client, service)
    return created


def client_factory(clients: ClientFactory | None) -> ClientFactory:
    """Validate a loader's `clients` argument; None means the shared `client`."""
    if clients is not None and not callable(clients):
        raise ConfigurationError(f"clients must be an async callable, got {clients!r}")
    return clients or client


async def close_clients() -> None:
    """Close every shared client (their connections); the next `client` call makes new ones."""
    _close_clients()


def _close_clients() -> None:
    with _lock:
        made = list(_clients.values())
        _clients.clear()
    for each in made:
        each.close()


def renew_session() -> None:
    """Close every shared client and read the credentials and endpoints anew on next use.

    For an environment restored from a snapshot (Lambda SnapStart), whose credentials and
    network are not the ones the clients were made with. The default session is replaced by a
    new one, built from the environment as it is now, that keeps the old one's loaded service
    models (a fresh session would parse them again: about 150 ms against 25 ms here). A session
    given to `use_session` is kept: give it again if its credentials changed.
    """
    global _session
    with _lock:
        if _session is not None and _session_is_default:
            import botocore.session

            renewed = botocore.session.Session()
            renewed.register_component("data_loader", _session.get_component("data_loader"))
            _session = renewed
    _close_clients()


async def in_thread(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking `function(*args, **kwargs)` in polycache's AWS worker threads.

    A caller that is cancelled stops waiting at once; the call itself ends within botocore's
    connect and read timeouts.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool(), functools.partial(function, *args, **kwargs))


class AsyncClient:
    """botocore's client for one service, with every operation awaitable.

    `await client.get_parameter(Name=...)` runs botocore's `get_parameter` in a worker thread
    and returns its response unchanged, except that a streamed payload (S3's `Body`) becomes an
    `AsyncBody`.
    Errors are botocore's own (`ClientError`, `ReadTimeoutError`, ...).

    Attributes:
        meta: The botocore client's `meta` (its config, endpoint URL, region).
    """

    __slots__ = ("_client", "_operations", "meta")

    def __init__(self, botocore_client: Any) -> None:
        self._client = botocore_client
        self._operations: dict[str, Callable[..., Awaitable[Any]]] = {}
        self.meta = botocore_client.meta

    def __repr__(self) -> str:
        return f"AsyncClient({self.meta.service_model.service_name!r})"

    def __getattr__(self, name: str) -> Any:
        operation = self._operations.get(name)
        if operation is None:
            attribute = getattr(self._client, name)
            if not callable(attribute):
                return attribute  # `exceptions` and other plain attributes, as they are
            operation = functools.partial(_call, attribute)
            self._operations[name] = operation
        return operation

    def close(self) -> None:
        """Close the client's connections."""
        with contextlib.suppress(Exception):
            self._client.close()


class AsyncBody:
    """A streamed response payload (S3's `Body`) read in worker threads, as aiobotocore's is.

    Use it as `async with body: data = await body.read()`; leaving the block releases the
    connection (or drops it mid-body).
    """

    __slots__ = ("_body",)

    def __init__(self, body: Any) -> None:
        self._body = body

    async def read(self, amount: int | None = None) -> bytes:
        """Read up to `amount` bytes (all of them with None); b"" at the end."""
        data: bytes = await in_thread(self._body.read, amount)
        return data

    def close(self) -> None:
        """Release the connection."""
        self._body.close()

    async def __aenter__(self) -> AsyncBody:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


async def _call(method: Callable[..., Any], /, **arguments: Any) -> Any:
    response = await in_thread(method, **arguments)
    if isinstance(response, dict):
        # A streamed payload (S3's Body, AppConfigData's Configuration) is read in threads too.
        for field, value in response.items():
            if hasattr(value, "read") and hasattr(value, "close"):
                response[field] = AsyncBody(value)
    return response


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                # Not the loop's default executor: that one is shut down with each
                # asyncio.run(), and these threads serve every loop of the process.
                _executor = concurrent.futures.ThreadPoolExecutor(
                    MAX_CONCURRENCY, thread_name_prefix="polycache-aws"
                )
    return _executor


def _create_client(service: str) -> AsyncClient:
    global _session, _session_is_default
    with _lock:
        made = _clients.get(service)
        if made is not None:
            return made
        if _session is None:
            _session = _default_session()
            _session_is_default = True
        made = AsyncClient(
            _session.create_client(
                service,
                config=_client_config(),
                endpoint_url=_endpoint_url(service),
                region_name=_region(),
            )
        )
        _clients[service] = made
        return made


def _default_session() -> Any:
    from polycache._extras import require_extra

    require_extra("the AWS loaders", "aws", "botocore")
    import botocore.session

    return botocore.session.Session()


def _client_config() -> Any:
    from botocore.config import Config

    # AWS_RETRY_MODE / AWS_MAX_ATTEMPTS keep their botocore meaning when set; an explicit
    # Config would otherwise override them.
    retries: dict[str, Any] = {"mode": os.environ.get("AWS_RETRY_MODE") or "standard"}
    if not os.environ.get("AWS_MAX_ATTEMPTS"):
        retries["max_attempts"] = MAX_ATTEMPTS
    return Config(
        retries=retries,  # type: ignore[arg-type]
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=MAX_CONCURRENCY,
    )


def _endpoint_url(service: str) -> str | None:
    # botocore reads these too, but only when its session is made; reading them per client
    # lets a process (or a test) point new clients somewhere else after close_clients().
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    specific = f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}"
    return os.environ.get(specific) or os.environ.get("AWS_ENDPOINT_URL") or None


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore `ClientError`, or the exception's class name.

    Args:
        exc: Any exception raised while calling AWS.

    Returns:
        `"ParameterNotFound"`, `"AccessDeniedException"`, `"304"`, ... for a `ClientError`;
        `"ReadTimeoutError"`, `"TimeoutError"`, ... for anything else.
    """
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status:
            return str(status)
    return type(exc).__name__


def translate_error(
    exc: BaseException, what: str, *, not_found: Collection[str] = ()
) -> LoaderError:
    """Translate an error from AWS into polycache's error about `what` (the caller chains it).

    The message names the source and the name the loader was given, the AWS error code and the
    operation, never AWS's message text or any value, so that no secret can leak through it.
    It names no cache key: a loader may be registered under any scheme, and the Cache, which
    knows the key, attaches it.

    Args:
        exc: The exception the AWS call raised.
        what: The source and name being loaded (`"SSM parameter '/prod/db/url'"`).
        not_found: The error codes that mean the name does not exist for this source.

    Returns:
        `SourceNotFound` for a code in `not_found`, `LoaderError` for anything else, with `exc`
        as its `__cause__`; an error that already is a `LoaderError` comes back unchanged.
    """
    if isinstance(exc, LoaderError):
        return exc
    code = error_code(exc)
    operation = getattr(exc, "operation_name", None)
    during = f" during {operation}" if operation else ""
    error: LoaderError
    if code in not_found:
        error = SourceNotFound(f"{what} not found ({code}{during})")
    elif isinstance(exc, asyncio.TimeoutError | TimeoutError):
        error = LoaderError(f"loading {what} timed out ({code}{during})")
    else:
        error = LoaderError(f"loading {what} failed: AWS error {code}{during}")
    # Chained here too, for errors a batch returns instead of raising.
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def translating(what: str, *, not_found: Collection[str] = ()) -> Iterator[None]:
    """Translate any non-polycache exception raised inside the block (see `translate_error`).

    Args:
        what: The source and name being loaded (`"SSM parameter '/prod/db/url'"`).
        not_found: The error codes that mean the name does not exist.

    Raises:
        SourceNotFound: The source has no such name.
        LoaderError: Any other failure, with the original error chained.
    """
    try:
        yield
    except PolycacheError:
        raise
    except Exception as exc:
        raise translate_error(exc, what, not_found=not_found) from exc
