"""A client of the Lambda Extensions API: register, wait for events, report a failed start.

See https://docs.aws.amazon.com/lambda/latest/dg/runtimes-extensions-api.html. The answers
are parsed whatever their Content-Type (cargo-lambda sends some without one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    import aiohttp

__all__ = ["Event", "ExtensionsApi", "ExtensionsApiError", "HttpExtensionsApi", "api_base_url"]

_VERSION: Final = "2020-01-01"
_IDENTIFIER: Final = "Lambda-Extension-Identifier"
_ERROR_TYPE: Final = "Lambda-Extension-Function-Error-Type"


class ExtensionsApiError(Exception):
    """The Extensions API could not be reached or answered with an error."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event from `event/next`.

    Attributes:
        kind: `"INVOKE"` or `"SHUTDOWN"`.
        shutdown_reason: `"spindown"`, `"timeout"` or `"failure"` (SHUTDOWN).
    """

    kind: str
    shutdown_reason: str | None = None


class ExtensionsApi(Protocol):
    """The calls an extension makes to Lambda."""

    async def register(self, name: str, events: tuple[str, ...]) -> str:
        """Register as `name` for `events`; returns the extension identifier."""
        ...

    async def next_event(self) -> Event:
        """Wait for the next event."""
        ...

    async def init_error(self, error_type: str, message: str) -> None:
        """Report a failed initialization (Lambda then fails the INIT phase)."""
        ...

    async def aclose(self) -> None:
        """Release the connection."""
        ...


def api_base_url(runtime_api: str) -> str:
    """`AWS_LAMBDA_RUNTIME_API` (`host:port`, or a URL as cargo-lambda gives) as a base URL."""
    base = runtime_api.strip().rstrip("/")
    if "://" not in base:
        base = f"http://{base}"
    return f"{base}/{_VERSION}/extension"


class HttpExtensionsApi:
    """`ExtensionsApi` over HTTP with aiohttp.

    Args:
        runtime_api: The value of `AWS_LAMBDA_RUNTIME_API`.
        session: An `aiohttp.ClientSession` to use (closed by `aclose`); one is made if None.
    """

    __slots__ = ("_base", "_identifier", "_session")

    def __init__(self, runtime_api: str, *, session: aiohttp.ClientSession | None = None) -> None:
        self._base = api_base_url(runtime_api)
        self._session = session
        self._identifier: str | None = None

    async def register(self, name: str, events: tuple[str, ...] = ("INVOKE", "SHUTDOWN")) -> str:
        """Register as `name`; returns the identifier Lambda assigns."""
        status, headers, _ = await self._request(
            "POST",
            "register",
            {"Lambda-Extension-Name": name},
            {"events": list(events)},
        )
        identifier = headers.get(_IDENTIFIER.lower())
        if status != 200 or not identifier:
            raise ExtensionsApiError(f"register answered {status} without an identifier")
        self._identifier = identifier
        return identifier

    async def next_event(self) -> Event:
        """Block until Lambda sends the next event."""
        status, _, body = await self._request("GET", "event/next", self._identified(), None)
        if status != 200:
            raise ExtensionsApiError(f"event/next answered {status}")
        try:
            document = json.loads(body)
            kind = str(document["eventType"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ExtensionsApiError("event/next answered something that is not an event") from exc
        return Event(kind=kind, shutdown_reason=document.get("shutdownReason"))

    async def init_error(self, error_type: str, message: str) -> None:
        """POST `init/error`."""
        await self._report("init/error", error_type, message)

    async def aclose(self) -> None:
        """Close the HTTP session."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _report(self, path: str, error_type: str, message: str) -> None:
        headers = {**self._identified(), _ERROR_TYPE: error_type}
        body = {"errorMessage": message, "errorType": error_type, "stackTrace": []}
        status, _, _ = await self._request("POST", path, headers, body)
        if status >= 300:
            raise ExtensionsApiError(f"{path} answered {status}")

    def _identified(self) -> dict[str, str]:
        if self._identifier is None:
            raise ExtensionsApiError("not registered yet")
        return {_IDENTIFIER: self._identifier}

    async def _request(
        self, method: str, path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, dict[str, str], bytes]:
        # The one place where aiohttp's errors become ExtensionsApiError.
        import aiohttp

        if self._session is None:
            # event/next waits as long as the environment is idle: no total timeout.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=5),
                trust_env=False,
            )
        data = None if body is None else json.dumps(body).encode()
        try:
            async with self._session.request(
                method, f"{self._base}/{path}", headers=headers, data=data
            ) as response:
                content = await response.read()
                lowered = {name.lower(): value for name, value in response.headers.items()}
                return response.status, lowered, content
        except (aiohttp.ClientError, OSError) as exc:
            raise ExtensionsApiError(f"{method} {path} failed: {type(exc).__name__}") from exc
