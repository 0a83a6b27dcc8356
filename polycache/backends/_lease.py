"""What every backend's `add` (a lease, `LeaseBackend`) checks before it sends anything."""

from __future__ import annotations

from polycache._config import duration
from polycache._errors import ConfigurationError

__all__ = ["lease_arguments"]


def lease_arguments(key: object, value: object, ttl: object) -> float:
    """Check the arguments of an `add` call; returns `ttl` in seconds.

    Raises:
        ConfigurationError: `key` is not a non-empty str, `value` is not bytes, or `ttl` is
            not a positive, finite number of seconds.
    """
    if type(key) is not str or not key:
        raise ConfigurationError(f"add takes a non-empty str key, got {key!r}")
    if not isinstance(value, bytes):
        raise ConfigurationError(f"add stores bytes, got {type(value).__name__} for {key!r}")
    return duration(ttl, name="add's ttl", allow_zero=False)
