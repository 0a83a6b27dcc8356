"""`AppConfigLoader`: configurations from AWS AppConfig (`appconfig:` keys).

| key | value |
|---|---|
| `appconfig:application/environment/profile` | the configuration (parsed JSON, text or bytes) |
| `appconfig:application/environment/flags#checkout` | one feature flag of a JSON configuration |

Two ways to reach AppConfig, chosen when the loader is built:

- **The AWS AppConfig Agent** (the AppConfig Lambda extension), when present: an HTTP GET of
  `/applications/{application}/environments/{environment}/configurations/{profile}` on
  127.0.0.1, port `AWS_APPCONFIG_EXTENSION_HTTP_PORT` (default 2772). The agent polls AppConfig
  itself; the loader asks it on every load. Present means `POLYCACHE_APPCONFIG_AGENT=1`, or,
  with that variable unset, any `AWS_APPCONFIG_EXTENSION_*` variable set (`0` forces the API).
- **The AppConfigData API** otherwise: `StartConfigurationSession` once per profile, then
  `GetLatestConfiguration` with the token of the previous answer. The loader keeps each
  profile's next-poll token, does not call again before the minimum poll interval AppConfig
  asked for (it returns the configuration it has), and returns that configuration when a poll
  answers with an empty body (unchanged).
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from polycache._errors import ConfigurationError, LoaderError, SourceNotFound
from polycache._extras import require_extra
from polycache.loaders import _aws
from polycache.loaders._transform import apply_transform

__all__ = ["AGENT_PORT", "AppConfigLoader", "AppConfigTransform"]

AppConfigTransform = Literal["auto", "json", "feature_flags"]
"""`"auto"` (by the Content-Type), `"json"`, or `"feature_flags"` (JSON of AppConfig flags)."""

AGENT_PORT: Final = 2772
"""The AppConfig Agent's default port (`AWS_APPCONFIG_EXTENSION_HTTP_PORT` changes it)."""

_NOT_FOUND: Final = frozenset({"ResourceNotFoundException"})
# A next-poll token is good for 24 hours and for one use: an old one means a new session.
_SESSION_LOST: Final = frozenset({"BadRequestException"})
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class _Name:
    application: str
    environment: str
    profile: str
    flag: str | None


def _parse(name: str) -> _Name:
    if isinstance(name, str):
        path, hash_sign, flag = name.partition("#")
        parts = path.split("/")
        if len(parts) == 3 and all(parts) and (flag or not hash_sign):
            return _Name(parts[0], parts[1], parts[2], flag or None)
    raise ConfigurationError(
        f"AppConfigLoader needs a name like application/environment/profile[#flag], got {name!r}"
    )


def _what(name: str) -> str:
    return f"AppConfig configuration {name!r}"


@dataclass(slots=True)
class _Session:
    """One profile's AppConfigData session: its next token and the configuration last seen."""

    token: str | None = None
    poll_after: float = 0.0
    content: bytes | None = None
    content_type: str = ""
    lock: asyncio.Lock | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def locked(self) -> asyncio.Lock:
        # One poll per profile at a time (a token is good for one call). The lock belongs to
        # the running loop; a new loop (asyncio.run per invocation) gets a new one.
        loop = asyncio.get_running_loop()
        if self.lock is None or self.loop is not loop:
            self.lock, self.loop = asyncio.Lock(), loop
        return self.lock


class AppConfigLoader:
    """Loads `appconfig:application/environment/profile` keys (the built-in loader).

    Args:
        transform: `"auto"` parses JSON when the Content-Type says JSON, decodes `text/*` to
            `str` and leaves anything else `bytes`; `"json"` always parses JSON;
            `"feature_flags"` parses JSON and checks it is AppConfig feature flags (each flag an
            object with a boolean `enabled`); None returns the bytes. A key's `#flag` suffix
            picks one flag (one top-level member) of a JSON configuration.
        agent: Use the AppConfig Agent (True), the AppConfigData API (False), or decide from
            the environment (None, see the module's docs).
        poll_interval: Seconds asked of AppConfig as the session's minimum poll interval
            (`RequiredMinimumPollIntervalInSeconds`, at least 15); None leaves AppConfig's
            default (60). The loader never polls sooner than AppConfig allows.
        environ: The environment to read the agent variables from (default `os.environ`).
        clients: Returns the client for a service name (AppConfigData API only); defaults to
            polycache's shared botocore clients.

    Example:
        ```python
        cache = Cache(ttl=45)
        settings = await cache.get("appconfig:shop/prod/settings")
        checkout = await cache.get("appconfig:shop/prod/flags#checkout")  # {"enabled": True, ...}
        ```
    """

    __slots__ = (
        "_agent_port",
        "_clients",
        "_clock",
        "_poll_interval",
        "_sessions",
        "_transform",
    )

    def __init__(
        self,
        *,
        transform: AppConfigTransform | None = "auto",
        agent: bool | None = None,
        poll_interval: float | None = None,
        environ: Mapping[str, str] | None = None,
        clients: _aws.ClientFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if transform is not None and transform not in get_args(AppConfigTransform):
            raise ConfigurationError(
                "transform must be one of 'auto', 'json', 'feature_flags' or None, "
                f"got {transform!r}"
            )
        if agent is not None and not isinstance(agent, bool):
            raise ConfigurationError(f"agent must be a bool or None, got {agent!r}")
        if poll_interval is not None and (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, int | float)
            or not 15 <= poll_interval <= 86400
        ):
            raise ConfigurationError(
                f"poll_interval must be seconds from 15 to 86400 or None, got {poll_interval!r}"
            )
        environment = os.environ if environ is None else environ
        self._agent_port = _agent_port(environment) if agent is not False else None
        if agent is True and self._agent_port is None:
            self._agent_port = _port(environment)
        if self._agent_port is None and clients is None:
            require_extra("the appconfig: loader", "aws", "botocore")
        self._transform = transform
        self._poll_interval = None if poll_interval is None else int(poll_interval)
        self._clients = _aws.client_factory(clients)
        self._clock = clock
        self._sessions: dict[tuple[str, str, str], _Session] = {}

    def __repr__(self) -> str:
        via = "API" if self._agent_port is None else f"agent at 127.0.0.1:{self._agent_port}"
        return f"AppConfigLoader(transform={self._transform!r}, via={via!r})"

    async def __call__(self, name: str) -> Any:
        """Load one configuration (or one flag of it).

        Args:
            name: `application/environment/profile`, optionally with `#flag`.

        Raises:
            SourceNotFound: No such application, environment, profile or flag.
            LoaderError: Any other failure, naming the configuration and the error code or
                HTTP status; a configuration that is not what the transform expects.
            ConfigurationError: A name that is not `application/environment/profile`.
        """
        parsed = _parse(name)
        what = _what(name)
        if self._agent_port is None:
            content, content_type = await self._poll(parsed, what)
        else:
            content, content_type = await _aws.in_thread(_agent_get, self._agent_port, parsed, what)
        return self._value(content, content_type, parsed, name, what)

    async def _poll(self, parsed: _Name, what: str) -> tuple[bytes, str]:
        profile = (parsed.application, parsed.environment, parsed.profile)
        session = self._sessions.setdefault(profile, _Session())
        async with session.locked():
            if session.content is not None and self._clock() < session.poll_after:
                return session.content, session.content_type
            client = await self._clients("appconfigdata")
            with _aws.translating(what, not_found=_NOT_FOUND):
                resumed = session.token is not None
                try:
                    response = await self._latest(client, session, parsed)
                except Exception as exc:
                    if not resumed or _aws.error_code(exc) not in _SESSION_LOST:
                        raise
                    # The kept token expired (24 h) or was lost: start a new session, once.
                    response = await self._latest(client, session, parsed)
            session.token = response.get("NextPollConfigurationToken")
            interval = response.get("NextPollIntervalInSeconds") or 0
            session.poll_after = self._clock() + float(interval)
            content = response.get("Configuration") or b""
            if content or session.content is None:
                # An empty body on a later poll means "unchanged": keep what we have.
                session.content = bytes(content)
                session.content_type = response.get("ContentType") or ""
            return session.content, session.content_type

    async def _latest(self, client: Any, session: _Session, parsed: _Name) -> Mapping[str, Any]:
        if session.token is None:
            arguments: dict[str, Any] = {
                "ApplicationIdentifier": parsed.application,
                "EnvironmentIdentifier": parsed.environment,
                "ConfigurationProfileIdentifier": parsed.profile,
            }
            if self._poll_interval is not None:
                arguments["RequiredMinimumPollIntervalInSeconds"] = self._poll_interval
            started = await client.start_configuration_session(**arguments)
            session.token = started["InitialConfigurationToken"]
        token, session.token = session.token, None  # spent, whatever the answer
        response: dict[str, Any] = await client.get_latest_configuration(ConfigurationToken=token)
        body = response.get("Configuration")
        if body is not None and hasattr(body, "read"):
            # botocore streams a payload blob; read it in full, as the configuration is the value.
            async with body:
                response["Configuration"] = await body.read()
        return response

    def _value(self, content: bytes, content_type: str, parsed: _Name, name: str, what: str) -> Any:
        media_type = content_type.split(";", 1)[0].strip().lower()
        is_json = media_type == "application/json" or media_type.endswith("+json")
        if self._transform is None or (self._transform == "auto" and not is_json):
            if parsed.flag is not None:
                raise LoaderError(f"{what}: a #flag needs a JSON configuration, got {media_type!r}")
            if self._transform == "auto" and media_type.startswith("text/"):
                return content.decode("utf-8", "replace")
            return content
        value = apply_transform(content, "json", name=name, what=what)
        if self._transform == "feature_flags":
            _check_flags(value, what)
        if parsed.flag is None:
            return value
        if not isinstance(value, dict) or parsed.flag not in value:
            raise SourceNotFound(f"{what} not found (no flag {parsed.flag!r})")
        return value[parsed.flag]


def _check_flags(value: Any, what: str) -> None:
    if not isinstance(value, dict):
        raise LoaderError(
            f"{what}: feature flags must be a JSON object, got {type(value).__name__}"
        )
    for flag, content in value.items():
        if not isinstance(content, dict) or not isinstance(content.get("enabled"), bool):
            raise LoaderError(
                f"{what}: feature flag {flag!r} must be an object with a boolean 'enabled'"
            )


def _agent_port(environ: Mapping[str, str]) -> int | None:
    """The agent's port when the agent is present by the documented rule, else None."""
    chosen = environ.get("POLYCACHE_APPCONFIG_AGENT", "").strip().lower()
    if chosen in _FALSE:
        return None
    if chosen in _TRUE or any(name.startswith("AWS_APPCONFIG_EXTENSION_") for name in environ):
        return _port(environ)
    if chosen:
        raise ConfigurationError(f"POLYCACHE_APPCONFIG_AGENT must be 1 or 0, got {chosen!r}")
    return None


def _port(environ: Mapping[str, str]) -> int:
    text = environ.get("AWS_APPCONFIG_EXTENSION_HTTP_PORT", "").strip()
    if not text:
        return AGENT_PORT
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConfigurationError(
            f"AWS_APPCONFIG_EXTENSION_HTTP_PORT must be a port number, got {text!r}"
        )
    return int(text)


def _agent_get(port: int, parsed: _Name, what: str) -> tuple[bytes, str]:
    """GET the configuration from the agent on 127.0.0.1 (runs in a worker thread)."""
    import http.client

    application, environment, profile = (
        urllib.parse.quote(part, safe="")
        for part in (parsed.application, parsed.environment, parsed.profile)
    )
    path = f"/applications/{application}/environments/{environment}/configurations/{profile}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=_aws.READ_TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise LoaderError(
            f"loading {what} failed: the AppConfig agent at 127.0.0.1:{port} did not answer "
            f"({type(exc).__name__})"
        ) from exc
    finally:
        connection.close()
    if response.status == 404:
        raise SourceNotFound(f"{what} not found (the AppConfig agent answered 404)")
    if response.status != 200:
        # The agent's body names AppConfig's error, never a configuration value.
        raise LoaderError(f"loading {what} failed: the AppConfig agent answered {response.status}")
    return body, response.headers.get("Content-Type", "")
