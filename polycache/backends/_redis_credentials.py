"""Where the Redis backend gets its password: the URL, a Secrets Manager secret, or IAM.

Nothing here imports redis or botocore at import time. redis-py asks for credentials on every new
connection (`CredentialProvider`), so a source answers quickly from what it has already read or
signed, and reads or signs again only when it must.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from polycache._errors import BackendError, ConfigurationError, SourceNotFound
from polycache._extras import require_extra
from polycache.backends._momento_credentials import SecretFetcher, _secrets_manager_fetch

__all__ = [
    "IAM_TOKEN_LIFETIME",
    "IAM_TOKEN_REFRESH_AFTER",
    "SECRET_VARIABLE",
    "CredentialSource",
    "IamCredentials",
    "PasswordCredentials",
    "RedisCredentials",
    "SecretPasswordCredentials",
    "iam_token",
    "is_serverless_host",
]

SECRET_VARIABLE: Final = "POLYCACHE_REDIS_PASSWORD_SECRET"  # noqa: S105 - a variable's name
IAM_TOKEN_LIFETIME: Final = 900
"""Seconds an ElastiCache IAM token is valid for (AWS's fixed 15 minutes)."""
IAM_TOKEN_REFRESH_AFTER: Final = 600.0
"""Seconds after which a new token is signed for new connections, well before the old one ends."""
_SERVERLESS_MARKER: Final = ".serverless."


@dataclass(frozen=True, slots=True)
class RedisCredentials:
    """The user name and password a connection authenticates with (`AUTH user password`).

    Attributes:
        username: The ACL user, or None for the `default` user.
        password: The password or IAM token; never part of a repr or a message.
        source: Where they came from, for messages (`the URL`, `POLYCACHE_REDIS_PASSWORD_SECRET`).
    """

    username: str | None
    password: str = field(repr=False)
    source: str


class CredentialSource(Protocol):
    """Supplies the credentials of each new connection."""

    async def __call__(self) -> RedisCredentials:
        """Return the credentials to authenticate the next connection with."""
        ...


class PasswordCredentials:
    """A user name and password given directly (in the URL)."""

    __slots__ = ("_credentials",)

    def __init__(self, username: str | None, password: str, *, source: str = "the URL") -> None:
        self._credentials = RedisCredentials(username, password, source)

    def __repr__(self) -> str:
        return f"PasswordCredentials(username={self._credentials.username!r}, password='***')"

    async def __call__(self) -> RedisCredentials:
        """Return the user name and password."""
        return self._credentials


# Secrets read in this process, by (secret name, user name, fetcher): read once, then reused by
# every backend and every event loop (the way the Momento key is read, and for the same reason).
_fetched: dict[tuple[str, str | None, object], RedisCredentials] = {}


def forget_fetched_secrets() -> None:
    """Forget the passwords read so far (tests rotate them)."""
    _fetched.clear()


class SecretPasswordCredentials:
    """A password kept in Secrets Manager, read once per process.

    The secret holds the password as plain text, or JSON with a `password` field and optionally
    a `username` field (the shape ElastiCache's user rotation writes).

    Args:
        secret_name: The secret's name or ARN.
        username: The ACL user when the secret names none (the URL's user).
        fetch: Reads a secret's string; defaults to polycache's Secrets Manager loader.
    """

    __slots__ = ("_fetch", "_reading", "secret_name", "username")

    def __init__(
        self, secret_name: str, *, username: str | None = None, fetch: SecretFetcher | None = None
    ) -> None:
        self.secret_name = secret_name
        self.username = username
        self._fetch = fetch
        self._reading: asyncio.Task[RedisCredentials] | None = None

    def __repr__(self) -> str:
        return (
            f"SecretPasswordCredentials(secret_name={self.secret_name!r}, "
            f"username={self.username!r})"
        )

    async def __call__(self) -> RedisCredentials:
        """Return the password from the secret, reading it on the first call in this process."""
        credentials = _fetched.get((self.secret_name, self.username, self._fetch))
        if credentials is not None:
            return credentials
        reading = self._reading
        if (
            reading is None
            or reading.done()
            or reading.get_loop() is not asyncio.get_running_loop()
        ):
            reading = asyncio.ensure_future(self._read_and_remember())
            reading.add_done_callback(_retrieve)
            self._reading = reading
        # Shielded: a first operation that times out leaves the read running for the next one.
        return await asyncio.shield(reading)

    async def _read_and_remember(self) -> RedisCredentials:
        credentials = parse_secret(
            await self._read(), secret_name=self.secret_name, username=self.username
        )
        _fetched[(self.secret_name, self.username, self._fetch)] = credentials
        return credentials

    async def _read(self) -> str:
        # The same reader as the Momento key's: polycache's own Secrets Manager loader.
        fetch = self._fetch or _secrets_manager_fetch
        try:
            secret = await fetch(self.secret_name)
        except SourceNotFound as exc:
            raise ConfigurationError(
                f"{SECRET_VARIABLE} names the secret {self.secret_name!r}, which does not exist"
            ) from exc
        except ConfigurationError:
            raise
        except Exception as exc:
            raise BackendError(
                f"reading the Redis password from secret {self.secret_name!r} "
                f"({SECRET_VARIABLE}) failed: {type(exc).__name__}"
            ) from exc
        if not isinstance(secret, str):
            raise ConfigurationError(
                f"the secret {self.secret_name!r} ({SECRET_VARIABLE}) must hold a string, "
                f"got {type(secret).__name__}"
            )
        return secret


def _retrieve(task: asyncio.Task[RedisCredentials]) -> None:
    """Mark a failed read's error as seen: the callers that awaited it have it already."""
    if not task.cancelled():
        task.exception()


def parse_secret(secret: str, *, secret_name: str, username: str | None) -> RedisCredentials:
    """Read a password (and maybe a user name) out of a secret's string.

    Raises:
        ConfigurationError: The secret is empty, malformed JSON, or has no password; the message
            names the secret and never shows its contents.
    """
    where = f"the secret {secret_name!r} ({SECRET_VARIABLE})"
    source = f"{SECRET_VARIABLE} (secret {secret_name!r})"
    if not secret.strip():
        raise ConfigurationError(f"{where} is empty; store the Redis password in it")
    if secret.lstrip()[:1] != "{":
        return RedisCredentials(username, secret, source)
    try:
        document = json.loads(secret)
    except ValueError:
        # The decode error quotes the document, which is the secret: do not chain it.
        raise ConfigurationError(f"{where} looks like JSON but is not valid JSON") from None
    password = document.get("password") if isinstance(document, dict) else None
    if not isinstance(password, str) or not password:
        raise ConfigurationError(f"{where} is JSON without a non-empty string field 'password'")
    secret_username = document.get("username")
    if secret_username is not None and (
        not isinstance(secret_username, str) or not secret_username
    ):
        raise ConfigurationError(f"{where} has a 'username' field that is not a non-empty string")
    return RedisCredentials(secret_username or username, password, source)


def iam_token(
    cache_name: str,
    user: str,
    *,
    region: str,
    aws_credentials: Any,
    serverless: bool = False,
) -> str:
    """Make an ElastiCache IAM authentication token with botocore's SigV4 signer.

    The token is a presigned `GET http://{cache_name}/?Action=connect&User={user}` for the
    service `elasticache`, valid 15 minutes, without its scheme, as AWS documents it.

    Args:
        cache_name: The replication group, cache or serverless cache name (lower case).
        user: The ElastiCache user id.
        region: The cache's AWS region.
        aws_credentials: botocore `Credentials` (or anything with `get_frozen_credentials`).
        serverless: Add `ResourceType=ServerlessCache`, as ElastiCache Serverless requires.
    """
    from urllib.parse import urlencode

    from botocore.hooks import HierarchicalEmitter
    from botocore.model import ServiceId
    from botocore.signers import RequestSigner

    query = {"Action": "connect", "User": user}
    if serverless:
        query["ResourceType"] = "ServerlessCache"
    # The signer holds its emitter weakly: keep this one alive for the call.
    emitter = HierarchicalEmitter()
    signer = RequestSigner(
        ServiceId("elasticache"), region, "elasticache", "v4", aws_credentials, emitter
    )
    request = {
        "method": "GET",
        "url": f"http://{cache_name}/?{urlencode(query)}",
        "body": {},
        "headers": {},
        "context": {},
    }
    url: str = signer.generate_presigned_url(
        request, region_name=region, expires_in=IAM_TOKEN_LIFETIME, operation_name="connect"
    )
    return url.removeprefix("http://")


class IamCredentials:
    """ElastiCache IAM authentication: a SigV4 token as the password, signed anew every 10 min.

    A token is valid for 15 minutes and checked only when a connection authenticates, so each
    new connection gets the current token, and a token older than `IAM_TOKEN_REFRESH_AFTER` is
    replaced before it is used.

    Args:
        user: The ElastiCache user id (also the ACL user name).
        cache_name: The cache's name, signed into the token.
        region: The cache's region.
        environ: Where `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` are
            read (as Lambda sets them); without them, botocore's default credential chain.
        serverless: The cache is ElastiCache Serverless.
        clock: Returns the epoch time in seconds; injectable for tests.
    """

    __slots__ = (
        "_aws_credentials",
        "_clock",
        "_current",
        "_environ",
        "_signed_at",
        "cache_name",
        "region",
        "serverless",
        "user",
    )

    def __init__(
        self,
        user: str,
        cache_name: str,
        *,
        region: str,
        environ: Mapping[str, str],
        serverless: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        require_extra("IAM authentication of the redis:// backend", "aws", "botocore")
        self.user = user
        self.cache_name = cache_name
        self.region = region
        self.serverless = serverless
        self._environ = environ
        self._clock = clock
        self._aws_credentials: Any = None
        self._current: RedisCredentials | None = None
        self._signed_at = 0.0

    def __repr__(self) -> str:
        return (
            f"IamCredentials(user={self.user!r}, cache_name={self.cache_name!r}, "
            f"region={self.region!r}, serverless={self.serverless})"
        )

    async def __call__(self) -> RedisCredentials:
        """Return the current token, signing a new one when the old is 10 minutes old."""
        now = self._clock()
        current = self._current
        if current is not None and now - self._signed_at < IAM_TOKEN_REFRESH_AFTER:
            return current
        if self._aws_credentials is None:
            # Lambda's variables need no I/O; the default chain may ask a metadata endpoint.
            self._aws_credentials = self._environment_credentials() or await asyncio.to_thread(
                _default_aws_credentials
            )
        token = iam_token(
            self.cache_name,
            self.user,
            region=self.region,
            aws_credentials=self._aws_credentials,
            serverless=self.serverless,
        )
        self._current = RedisCredentials(self.user, token, "ElastiCache IAM authentication")
        self._signed_at = now
        return self._current

    def _environment_credentials(self) -> Any:
        key = self._environ.get("AWS_ACCESS_KEY_ID")
        secret = self._environ.get("AWS_SECRET_ACCESS_KEY")
        if not key or not secret:
            return None
        from botocore.credentials import Credentials

        return Credentials(key, secret, self._environ.get("AWS_SESSION_TOKEN") or None)


def _default_aws_credentials() -> Any:
    """The AWS credentials of botocore's default chain (profiles, container and instance roles)."""
    import botocore.session

    found = botocore.session.get_session().get_credentials()
    if found is None:
        raise ConfigurationError(
            "ElastiCache IAM authentication (iam=1) found no AWS credentials: set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or configure a profile or role"
        )
    return found


def is_serverless_host(host: str) -> bool:
    """True for an ElastiCache Serverless endpoint (`name-abc123.serverless.use1.cache...`)."""
    return _SERVERLESS_MARKER in host.lower()
