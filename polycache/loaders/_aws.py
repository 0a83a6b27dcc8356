"""Shared AWS plumbing for the built-in loaders: session, clients, and error translation.

One aioboto3 session per process and one client per service per event loop, created on first
use and reused across invocations (connection reuse is the first rule of Lambda performance).
aioboto3, aiobotocore and botocore are imported here, and only when a client is first needed,
so that `import polycache` stays cheap on a cold start.

Every AWS error a loader meets is translated by `translate_error` (through `translating`), so
that "not found" means `SourceNotFound` and everything else `LoaderError` in all four loaders.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import Any, Final

from polycache._errors import ConfigurationError, LoaderError, PolycacheError, SourceNotFound
from polycache._loop_bound import LoopBound

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_ATTEMPTS",
    "READ_TIMEOUT",
    "ClientFactory",
    "client",
    "client_factory",
    "close_clients",
    "error_code",
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

_session: Any = None
_clients: dict[str, LoopBound[Any]] = {}


def use_session(session: Any | None) -> None:
    """Use `session` (an `aioboto3.Session`) for every client from now on.

    Clients already made keep working on their loop until `close_clients`; new ones come from
    this session. Pass None to go back to the default session built from the environment.

    Args:
        session: An `aioboto3.Session` (a named profile, explicit credentials), or None.
    """
    global _session
    _session = session
    _clients.clear()


async def client(service: str) -> Any:
    """Return the shared client for `service` on the running event loop, creating it if needed.

    Args:
        service: A botocore service name: `"ssm"`, `"secretsmanager"`, `"s3"`, `"dynamodb"`.

    Returns:
        An aiobotocore client, reused by every caller on this loop; do not close it yourself.

    Raises:
        ConfigurationError: aioboto3 is not installed.
    """
    bound = _clients.get(service)
    if bound is None:
        bound = LoopBound(lambda: _create_client(service), _close_client)
        _clients[service] = bound
    return await bound.get()


def client_factory(clients: ClientFactory | None) -> ClientFactory:
    """Validate a loader's `clients` argument; None means the shared `client`."""
    if clients is not None and not callable(clients):
        raise ConfigurationError(f"clients must be an async callable, got {clients!r}")
    return clients or client


async def close_clients() -> None:
    """Close every client made on the running loop; the next `client` call makes new ones."""
    bounds = list(_clients.values())
    _clients.clear()
    for bound in bounds:
        await bound.aclose()


def _default_session() -> Any:
    global _session
    if _session is None:
        if importlib.util.find_spec("aioboto3") is None:
            raise ConfigurationError("the AWS loaders need aioboto3: pip install 'polycache[aws]'")
        import aioboto3

        _session = aioboto3.Session()
    return _session


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
    )


def _endpoint_url(service: str) -> str | None:
    # botocore reads these too, but only when its session is made; reading them per client
    # lets a process (or a test) point a new loop's clients somewhere else.
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    specific = f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}"
    return os.environ.get(specific) or os.environ.get("AWS_ENDPOINT_URL") or None


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


async def _create_client(service: str) -> Any:
    session = _default_session()
    context = session.client(
        service,
        config=_client_config(),
        endpoint_url=_endpoint_url(service),
        region_name=_region(),
    )
    return await context.__aenter__()


async def _close_client(aws_client: Any) -> None:
    with contextlib.suppress(Exception):
        await aws_client.close()


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
    exc: BaseException, key: str, *, not_found: Collection[str] = ()
) -> LoaderError:
    """Translate an error from AWS into polycache's error for `key` (the caller chains it).

    The message names the key, the AWS error code and the operation, never AWS's message text
    or any value, so that no secret can leak through it.

    Args:
        exc: The exception the AWS call raised.
        key: The cache key being loaded (`"ssm:/prod/db/url"`).
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
        error = SourceNotFound(f"{key} not found ({code}{during})", key=key)
    elif isinstance(exc, asyncio.TimeoutError | TimeoutError):
        error = LoaderError(f"loading {key} timed out ({code}{during})", key=key)
    else:
        error = LoaderError(f"loading {key} failed: AWS error {code}{during}", key=key)
    # Chained here too, for errors a batch returns instead of raising.
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def translating(key: str, *, not_found: Collection[str] = ()) -> Iterator[None]:
    """Translate any non-polycache exception raised inside the block (see `translate_error`).

    Args:
        key: The cache key being loaded.
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
        raise translate_error(exc, key, not_found=not_found) from exc
