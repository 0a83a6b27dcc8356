"""A backend's secret (the Momento API key, the Redis password), read once per process.

Both backends keep their credential in Secrets Manager the same way: the secret is read through
polycache's own Secrets Manager loader on first use, then reused by every backend and every
event loop of the process, as the Momento and ElastiCache Lambda guides recommend. Callers that
ask while the first read runs join it (`Flights.start`): the read runs in a task of its own, so a
first operation that times out leaves it running for the next one instead of starting over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from polycache._errors import BackendError, ConfigurationError, SourceNotFound
from polycache._flight import Flight, Flights

__all__ = ["SecretFetcher", "forget_read_secrets", "read_secret"]

SecretFetcher = Callable[[str], Awaitable[str]]
"""Returns the SecretString of the named secret (polycache's Secrets Manager loader by default)."""

T = TypeVar("T")

# The secrets read in this process, by (secret name, fetcher); only those that parsed, so that a
# malformed secret is read again (once fixed) rather than failing until the process ends.
_read: dict[tuple[str, object], str] = {}
# The reads under way. A flight's futures belong to the loop it started on, so the loop is part
# of the key: a loop never joins another loop's read (two threads, or a loop per invocation).
_reading: Flights[tuple[str, object, asyncio.AbstractEventLoop], str] = Flights()
_tasks: set[asyncio.Task[Any]] = set()


def forget_read_secrets() -> None:
    """Forget the secrets read so far (tests rotate them)."""
    _read.clear()


async def read_secret(
    secret_name: str,
    *,
    fetch: SecretFetcher | None,
    parse: Callable[[str], T],
    holding: str,
    variable: str,
) -> T:
    """Return the secret `secret_name` parsed, reading it on the first call in the process.

    Args:
        secret_name: The secret's name or ARN.
        fetch: Reads a secret's string; None for polycache's Secrets Manager loader.
        parse: Turns the secret's string into credentials; raises if it is malformed.
        holding: What the secret holds, for messages (`the Redis password`).
        variable: The environment variable that named the secret, for messages.

    Raises:
        ConfigurationError: The secret does not exist, does not hold a string, or `parse`
            rejected it.
        BackendError: Reading it failed otherwise (the vendor error chained, never its text).
    """
    secret = _read.get((secret_name, fetch))
    if secret is None:
        key = (secret_name, fetch, asyncio.get_running_loop())
        flight = _reading.get(key)
        if flight is None:

            async def read(flight: Flight[str]) -> str:
                return await _read_and_remember(
                    secret_name, fetch=fetch, parse=parse, holding=holding, variable=variable
                )

            flight = _reading.start(key, read, _tasks)
        secret = await flight.wait()
    return parse(secret)


async def _read_and_remember(
    secret_name: str,
    *,
    fetch: SecretFetcher | None,
    parse: Callable[[str], object],
    holding: str,
    variable: str,
) -> str:
    try:
        secret = await (fetch or _secrets_manager_fetch)(secret_name)
    except SourceNotFound as exc:
        raise ConfigurationError(
            f"{variable} names the secret {secret_name!r}, which does not exist"
        ) from exc
    except ConfigurationError:
        raise
    except Exception as exc:
        raise BackendError(
            f"reading {holding} from secret {secret_name!r} ({variable}) failed: "
            f"{type(exc).__name__}"
        ) from exc
    if not isinstance(secret, str):
        raise ConfigurationError(
            f"the secret {secret_name!r} ({variable}) must hold a string, "
            f"got {type(secret).__name__}"
        )
    parse(secret)
    _read[(secret_name, fetch)] = secret
    return secret


async def _secrets_manager_fetch(secret_name: str) -> str:
    from polycache.loaders.secretsmanager import SecretsManagerLoader

    secret: str = await SecretsManagerLoader()(secret_name)
    return secret
