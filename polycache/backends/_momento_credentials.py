"""Where the Momento backend gets its API key: an environment variable or a Secrets Manager secret.

Nothing here imports momento: the key is checked with the standard library, and the SDK's
credential provider is built from it later, on first use of the backend.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from polycache._errors import ConfigurationError
from polycache.backends._secrets import SecretFetcher, read_secret

__all__ = [
    "API_KEY_VARIABLE",
    "ENDPOINT_VARIABLE",
    "SECRET_VARIABLE",
    "CredentialSource",
    "EnvironmentCredentials",
    "MomentoCredentials",
    "NoCredentials",
    "SecretCredentials",
    "credentials_from_environment",
    "log_background_failure",
]

API_KEY_VARIABLE = "MOMENTO_API_KEY"
ENDPOINT_VARIABLE = "MOMENTO_ENDPOINT"
SECRET_VARIABLE = "POLYCACHE_MOMENTO_API_KEY_SECRET"  # noqa: S105 - a variable name, not a secret
_SECRET_FIELDS = ("MOMENTO_API_KEY", "MOMENTO_AUTH_TOKEN")
_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")

logger = logging.getLogger("polycache")


@dataclass(frozen=True, slots=True)
class MomentoCredentials:
    """A Momento API key, the endpoint it belongs to, and where it came from.

    Attributes:
        api_key: The key itself; never part of a repr or a message.
        endpoint: The Momento endpoint (`cell-us-east-1-1.prod.a.momentohq.com`), if known.
        source: Where the key came from, named for error messages (`MOMENTO_API_KEY`).
    """

    api_key: str = field(repr=False)
    endpoint: str | None
    source: str


class CredentialSource(Protocol):
    """Supplies the credentials the Momento client is built with (injectable for tests)."""

    async def __call__(self) -> MomentoCredentials | None:
        """Return the credentials, or None when there is no key (fine for a local server)."""
        ...


class NoCredentials:
    """No key at all: only a local Momento-protocol server (`endpoint=`) accepts that."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NoCredentials()"

    async def __call__(self) -> MomentoCredentials | None:
        """Return None."""
        return None


class EnvironmentCredentials:
    """A key given directly, as `MOMENTO_API_KEY` (+ `MOMENTO_ENDPOINT`) are.

    Args:
        credentials: The key, checked when this object is built.
    """

    __slots__ = ("_credentials",)

    def __init__(self, credentials: MomentoCredentials) -> None:
        self._credentials = credentials

    def __repr__(self) -> str:
        return f"EnvironmentCredentials(source={self._credentials.source!r})"

    @property
    def credentials(self) -> MomentoCredentials:
        """The key and its endpoint."""
        return self._credentials

    async def __call__(self) -> MomentoCredentials | None:
        """Return the key."""
        return self._credentials


class SecretCredentials:
    """A key kept in Secrets Manager, read once per process.

    The secret is either the key as plain text, or JSON with a `MOMENTO_API_KEY` (or
    `MOMENTO_AUTH_TOKEN`) field and optionally a `MOMENTO_ENDPOINT` field.

    Args:
        secret_name: The secret's name or ARN.
        endpoint: The endpoint to use when the secret does not name one (`MOMENTO_ENDPOINT`).
        fetch: Reads a secret's string; defaults to polycache's Secrets Manager loader.
    """

    __slots__ = ("_endpoint", "_fetch", "secret_name")

    def __init__(
        self,
        secret_name: str,
        *,
        endpoint: str | None = None,
        fetch: SecretFetcher | None = None,
    ) -> None:
        self.secret_name = secret_name
        self._endpoint = endpoint
        self._fetch = fetch

    def __repr__(self) -> str:
        return f"SecretCredentials(secret_name={self.secret_name!r})"

    async def __call__(self) -> MomentoCredentials | None:
        """Return the key from the secret, reading it on the first call in this process."""
        return await read_secret(
            self.secret_name,
            fetch=self._fetch,
            parse=self._parse,
            holding="the Momento API key",
            variable=SECRET_VARIABLE,
        )

    def _parse(self, secret: str) -> MomentoCredentials:
        return parse_secret(secret, secret_name=self.secret_name, endpoint=self._endpoint)


def log_background_failure(task: asyncio.Task[Any]) -> None:
    """Mark a background task's error as seen (whoever awaited it has it), and log it."""
    if not task.cancelled():
        error = task.exception()
        if error is not None:
            logger.debug("polycache: a Momento background step failed: %r", error)


def parse_secret(secret: str, *, secret_name: str, endpoint: str | None) -> MomentoCredentials:
    """Read a key out of a secret's string: the key itself, or JSON holding it.

    Raises:
        ConfigurationError: The secret is empty, malformed JSON, or has no key field; the
            message names the secret and never shows its contents.
    """
    where = f"the secret {secret_name!r} ({SECRET_VARIABLE})"
    text = secret.strip()
    if not text:
        raise ConfigurationError(f"{where} is empty; store the Momento API key in it")
    if text[0] in '{["':
        try:
            document = json.loads(text)
        except ValueError:
            # The decode error keeps the whole document, which is the secret: do not chain it.
            raise ConfigurationError(f"{where} looks like JSON but is not valid JSON") from None
        fields = " or ".join(_SECRET_FIELDS)
        if not isinstance(document, dict):
            raise ConfigurationError(f"{where} must be a JSON object with a {fields} field")
        key = next((document[name] for name in _SECRET_FIELDS if name in document), None)
        if not isinstance(key, str) or not key.strip():
            raise ConfigurationError(f"{where} has no non-empty string field {fields}")
        secret_endpoint = document.get(ENDPOINT_VARIABLE)
        if secret_endpoint is not None and (
            not isinstance(secret_endpoint, str) or not secret_endpoint.strip()
        ):
            raise ConfigurationError(f"{where} has a {ENDPOINT_VARIABLE} field that is not a host")
        text = key.strip()
        endpoint = secret_endpoint.strip() if secret_endpoint else endpoint
    source = f"{SECRET_VARIABLE} (secret {secret_name!r})"
    check_api_key(text, source=source)
    return MomentoCredentials(text, endpoint, source)


def check_api_key(api_key: str, *, source: str) -> None:
    """Check that a key looks like a Momento API key (a JWT), without showing it.

    Raises:
        ConfigurationError: Naming `source`, if the key has whitespace or is not a JWT.
    """
    if any(character.isspace() for character in api_key):
        raise ConfigurationError(f"{source} holds a Momento API key with whitespace in it")
    segments = api_key.split(".")
    if (
        len(segments) != 3
        or not all(segments[:2])
        or not all(character in _BASE64URL for segment in segments for character in segment)
    ):
        raise ConfigurationError(
            f"{source} does not hold a Momento API key (expected a token of three "
            "dot-separated parts, as the Momento console issues)"
        )
    try:
        payload = segments[1] + "=" * (-len(segments[1]) % 4)
        json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        raise ConfigurationError(
            f"{source} does not hold a Momento API key (its claims are not readable)"
        ) from None


def credentials_from_environment(
    environ: Mapping[str, str], *, fetch: SecretFetcher | None = None
) -> CredentialSource:
    """Choose the credential source the environment asks for.

    `POLYCACHE_MOMENTO_API_KEY_SECRET` wins over `MOMENTO_API_KEY`; with neither there is no key,
    which only a local server accepts.

    Raises:
        ConfigurationError: A variable that is set but empty or malformed, named.
    """
    endpoint = environ.get(ENDPOINT_VARIABLE)
    if endpoint is not None and not endpoint.strip():
        raise ConfigurationError(f"{ENDPOINT_VARIABLE} is set but empty; unset it or name a host")
    endpoint = endpoint.strip() if endpoint else None
    secret_name = environ.get(SECRET_VARIABLE)
    if secret_name is not None:
        if not secret_name.strip():
            raise ConfigurationError(
                f"{SECRET_VARIABLE} is set but empty; name the Secrets Manager secret that holds "
                "the Momento API key"
            )
        return SecretCredentials(secret_name.strip(), endpoint=endpoint, fetch=fetch)
    api_key = environ.get(API_KEY_VARIABLE)
    if api_key is None:
        return NoCredentials()
    if not api_key.strip():
        raise ConfigurationError(f"{API_KEY_VARIABLE} is set but empty; set it to your API key")
    check_api_key(api_key.strip(), source=API_KEY_VARIABLE)
    return EnvironmentCredentials(MomentoCredentials(api_key.strip(), endpoint, API_KEY_VARIABLE))
