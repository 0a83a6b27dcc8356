"""Settings: arguments, then `POLYCACHE_*` environment variables, then defaults.

This is the one place that reads polycache's environment variables.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeAlias

from polycache._contracts import Frozen, set_field
from polycache._errors import ConfigurationError

__all__ = ["DEFAULTS", "UNSET", "Settings", "Unset", "duration", "fraction", "resolve_settings"]

if TYPE_CHECKING:
    from datetime import timedelta

Duration: TypeAlias = "float | int | timedelta"

ENVIRONMENT_NAMES = {
    "backend": "POLYCACHE_BACKEND",
    "ttl": "POLYCACHE_TTL",
    "stale_ttl": "POLYCACHE_STALE_TTL",
    "stale_if_error": "POLYCACHE_STALE_IF_ERROR",
    "negative_ttl": "POLYCACHE_NEGATIVE_TTL",
    "backend_timeout": "POLYCACHE_BACKEND_TIMEOUT",
    "load_timeout": "POLYCACHE_LOAD_TIMEOUT",
    "ttl_jitter": "POLYCACHE_TTL_JITTER",
    "lease_wait": "POLYCACHE_LEASE_WAIT",
    "disabled": "POLYCACHE_DISABLED",
}


class Settings(Frozen):
    """The resolved, validated configuration of one `Cache`."""

    __slots__ = (
        "backend",
        "backend_timeout",
        "disabled",
        "lease_wait",
        "load_timeout",
        "negative_ttl",
        "stale_if_error",
        "stale_ttl",
        "ttl",
        "ttl_jitter",
    )
    __match_args__ = (
        "backend",
        "ttl",
        "stale_ttl",
        "stale_if_error",
        "negative_ttl",
        "backend_timeout",
        "load_timeout",
        "ttl_jitter",
        "lease_wait",
        "disabled",
    )

    backend: str
    ttl: float
    stale_ttl: float
    stale_if_error: float
    negative_ttl: float
    backend_timeout: float
    load_timeout: float | None
    ttl_jitter: float
    lease_wait: float
    disabled: bool

    def __init__(
        self,
        backend: str,
        ttl: float,
        stale_ttl: float,
        stale_if_error: float,
        negative_ttl: float,
        backend_timeout: float,
        load_timeout: float | None,
        ttl_jitter: float,
        lease_wait: float,
        disabled: bool,
    ) -> None:
        set_field(self, "backend", backend)
        set_field(self, "ttl", ttl)
        set_field(self, "stale_ttl", stale_ttl)
        set_field(self, "stale_if_error", stale_if_error)
        set_field(self, "negative_ttl", negative_ttl)
        set_field(self, "backend_timeout", backend_timeout)
        set_field(self, "load_timeout", load_timeout)
        set_field(self, "ttl_jitter", ttl_jitter)
        set_field(self, "lease_wait", lease_wait)
        set_field(self, "disabled", disabled)


DEFAULTS = Settings(
    backend="memory://",
    ttl=300.0,
    stale_ttl=0.0,
    stale_if_error=0.0,
    negative_ttl=30.0,
    backend_timeout=1.0,
    load_timeout=30.0,
    ttl_jitter=0.0,
    lease_wait=2.0,
    disabled=False,
)


class Unset:
    """The type of `UNSET`: an argument that was not given (where None means something)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


def _unacceptable(seconds: float, *, allow_zero: bool) -> str | None:
    """What a duration should have been, if `seconds` is not acceptable; None if it is."""
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        return "a finite, non-negative" if allow_zero else "a positive"
    return None


def duration(value: object, *, name: str, allow_zero: bool = True) -> float:
    """Validate a duration given as seconds (int or float) or a `timedelta`.

    Raises:
        ConfigurationError: naming `name`, if the value is not a finite, non-negative duration.
    """
    # datetime costs a millisecond to import; if it is not imported, no timedelta exists.
    datetime_module = sys.modules.get("datetime")
    if datetime_module is not None and isinstance(value, datetime_module.timedelta):
        seconds = float(value.total_seconds())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigurationError(
            f"{name} must be a number of seconds or a timedelta, got {type(value).__name__} "
            f"{value!r}"
        )
    expected = _unacceptable(seconds, allow_zero=allow_zero)
    if expected is not None:
        raise ConfigurationError(f"{name} must be {expected} number of seconds, got {value!r}")
    return seconds


def fraction(value: object, *, name: str) -> float:
    """Validate a fraction from 0 up to (not including) 1.

    Raises:
        ConfigurationError: naming `name`, if the value is not such a number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{name} must be a fraction from 0 to below 1, got {type(value).__name__} {value!r}"
        )
    if not 0 <= value < 1:
        raise ConfigurationError(f"{name} must be a fraction from 0 to below 1, got {value!r}")
    return float(value)


def _environment_fraction(environ: Mapping[str, str], field: str) -> float:
    variable = ENVIRONMENT_NAMES[field]
    raw = environ.get(variable, "").strip()
    if not raw:
        return float(getattr(DEFAULTS, field))
    try:
        return fraction(float(raw), name=variable)
    except ValueError:
        raise ConfigurationError(
            f"{variable}={raw!r}: expected a fraction from 0 to below 1, such as '0.1'"
        ) from None


def _environment_duration(
    environ: Mapping[str, str], field: str, default: float, *, allow_zero: bool = True
) -> float:
    variable = ENVIRONMENT_NAMES[field]
    raw = environ.get(variable)
    if raw is None or raw.strip() == "":
        return default
    try:
        seconds = float(raw.strip())
    except ValueError:
        raise ConfigurationError(
            f"{variable}={raw!r} is not a number of seconds (expected e.g. '300' or '0.5')"
        ) from None
    expected = _unacceptable(seconds, allow_zero=allow_zero)
    if expected is not None:
        raise ConfigurationError(f"{variable}={raw!r}: expected {expected} number of seconds")
    return seconds


def _environment_load_timeout(environ: Mapping[str, str]) -> float | None:
    raw = environ.get(ENVIRONMENT_NAMES["load_timeout"], "").strip().lower()
    if raw in ("none", "off"):
        return None
    return _environment_duration(environ, "load_timeout", 30.0, allow_zero=False)


def _environment_flag(environ: Mapping[str, str], field: str) -> bool:
    variable = ENVIRONMENT_NAMES[field]
    raw = environ.get(variable, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigurationError(f"{variable}={raw!r}: expected '1' or '0'")


def resolve_settings(
    environ: Mapping[str, str] | None = None,
    *,
    backend: str | None = None,
    ttl: Duration | None = None,
    stale_ttl: Duration | None = None,
    stale_if_error: Duration | None = None,
    negative_ttl: Duration | None = None,
    backend_timeout: Duration | None = None,
    load_timeout: Duration | Unset | None = UNSET,
    ttl_jitter: float | None = None,
    lease_wait: Duration | None = None,
    disabled: bool | None = None,
) -> Settings:
    """Merge arguments over environment variables over defaults, validating every value."""
    env = os.environ if environ is None else environ

    def pick(field: str, given: Duration | None, *, allow_zero: bool = True) -> float:
        if given is not None:
            return duration(given, name=field, allow_zero=allow_zero)
        default: float = getattr(DEFAULTS, field)
        return _environment_duration(env, field, default, allow_zero=allow_zero)

    if backend is None:
        backend = env.get(ENVIRONMENT_NAMES["backend"], "").strip() or DEFAULTS.backend
    if disabled is not None and not isinstance(disabled, bool):
        raise ConfigurationError(f"disabled must be a bool, got {disabled!r}")
    return Settings(
        backend=backend,
        ttl=pick("ttl", ttl),
        stale_ttl=pick("stale_ttl", stale_ttl),
        stale_if_error=pick("stale_if_error", stale_if_error),
        negative_ttl=pick("negative_ttl", negative_ttl),
        backend_timeout=pick("backend_timeout", backend_timeout, allow_zero=False),
        load_timeout=_environment_load_timeout(env)
        if isinstance(load_timeout, Unset)
        else None
        if load_timeout is None
        else duration(load_timeout, name="load_timeout", allow_zero=False),
        ttl_jitter=_environment_fraction(env, "ttl_jitter")
        if ttl_jitter is None
        else fraction(ttl_jitter, name="ttl_jitter"),
        lease_wait=pick("lease_wait", lease_wait),
        disabled=_environment_flag(env, "disabled") if disabled is None else disabled,
    )
