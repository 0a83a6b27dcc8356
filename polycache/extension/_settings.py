"""The extension's settings, read once from its environment.

The polycache extension answers to its own `POLYCACHE_EXTENSION_*` variables and, where they
make sense, to those of the two extensions it replaces: the AWS sample cache extension
(`CACHE_EXTENSION_TTL`, `CACHE_EXTENSION_INIT_STARTUP`) and the AWS Parameters and Secrets
Lambda Extension (`PARAMETERS_SECRETS_EXTENSION_HTTP_PORT`, `SSM_PARAMETER_STORE_TTL`,
`SECRETS_MANAGER_TTL`, ...), without their 300 s cap on TTLs.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from polycache import _extension_wire as wire
from polycache._errors import ConfigurationError

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_ITEM_BYTES",
    "DEFAULT_PORT",
    "ExtensionSettings",
    "go_duration",
    "read_settings",
]

DEFAULT_PORT: Final = wire.DEFAULT_PORT
"""The AWS sample cache extension's port."""

DEFAULT_MAX_ITEM_BYTES: Final = wire.DEFAULT_MAX_ITEM_BYTES
"""The largest value the key/value API stores, unless `POLYCACHE_EXTENSION_MAX_ITEM_BYTES`."""

DEFAULT_IDLE_TIMEOUT: Final = 10.0
"""Seconds a connection may go without a complete request head (`..._IDLE_TIMEOUT`)."""

DEFAULT_BODY_TIMEOUT: Final = 5.0
"""Seconds a request body may take to arrive (`POLYCACHE_EXTENSION_BODY_TIMEOUT`)."""

DEFAULT_MAX_CONNECTIONS: Final = 256
"""Open connections at most (`POLYCACHE_EXTENSION_MAX_CONNECTIONS`), fewer under a low fd limit."""

DEFAULT_MAX_BYTES: Final = 32 * 1024 * 1024
"""The most bytes the key/value store holds, unless `POLYCACHE_EXTENSION_MAX_BYTES`."""

T = TypeVar("T")

_GO_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts the micro sign as well as the Greek letter mu
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_LOG_LEVELS: Final = {
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "warning": "WARNING",
    "error": "ERROR",
    "none": "CRITICAL",
}


@dataclass(frozen=True, slots=True)
class ExtensionSettings:
    """The validated configuration of one extension process.

    Attributes:
        port: The 127.0.0.1 port to serve on.
        runtime_api: `AWS_LAMBDA_RUNTIME_API` (`host:port`), or None to run standalone.
        name: The name to register with (the launcher's file name in `/opt/extensions`).
        token: `AWS_SESSION_TOKEN`; when set, every request must carry it.
        max_item_bytes: The largest value the key/value API stores (413 beyond it).
        max_bytes: The most bytes the key/value store holds (least recently used dropped).
        max_entries: The most entries kept by the key/value store and by the read-through cache.
        max_inflight_bytes: The most bytes of request bodies held at once, by all requests
            together (503 beyond it); default four values of `max_item_bytes`.
        idle_timeout: Seconds a connection may go without a complete request head: the
            deadline for a request's headers and the keep-alive idle timeout alike.
        body_timeout: Seconds a request's body may take to arrive (408 beyond it).
        max_connections: Connections open at once at most; the oldest idle one is closed to
            make room for a new one. Lowered at start to leave file descriptors for the rest
            of the process under a low `RLIMIT_NOFILE`.
        parameters_ttl: Fresh seconds of `/parameters` and `/dynamodb` answers.
        ssm_ttl: Fresh seconds of `/systemsmanager/parameters/get` answers.
        secrets_ttl: Fresh seconds of `/secretsmanager/get` answers.
        stale_ttl: Seconds a read-through answer is served stale while one refresh runs.
        negative_ttl: Seconds a source's "not found" is remembered.
        source_timeout: Seconds one read-through load may take (504 beyond it).
        config_path: The sample's `config.yaml` (parameters and DynamoDB items by name).
        init_startup: Load everything `config_path` names before the first invoke.
        log_level: A `logging` level name.
    """

    port: int = DEFAULT_PORT
    runtime_api: str | None = None
    name: str = "polycache-extension"
    token: str | None = None
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES
    max_bytes: int = DEFAULT_MAX_BYTES
    max_entries: int = 10_000
    max_inflight_bytes: int = 4 * DEFAULT_MAX_ITEM_BYTES
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    parameters_ttl: float = 300.0
    ssm_ttl: float = 300.0
    secrets_ttl: float = 300.0
    stale_ttl: float = 0.0
    negative_ttl: float = 30.0
    source_timeout: float = 5.0
    config_path: Path | None = None
    init_startup: bool = True
    log_level: str = "INFO"

    def __repr__(self) -> str:
        # The token is a credential: say whether there is one, never what it is.
        token = "set" if self.token else None
        return (
            f"ExtensionSettings(port={self.port}, runtime_api={self.runtime_api!r}, "
            f"name={self.name!r}, token={token}, max_item_bytes={self.max_item_bytes}, "
            f"max_bytes={self.max_bytes}, "
            f"max_entries={self.max_entries}, max_inflight_bytes={self.max_inflight_bytes}, "
            f"idle_timeout={self.idle_timeout}, body_timeout={self.body_timeout}, "
            f"max_connections={self.max_connections}, parameters_ttl={self.parameters_ttl}, "
            f"ssm_ttl={self.ssm_ttl}, secrets_ttl={self.secrets_ttl}, "
            f"stale_ttl={self.stale_ttl}, negative_ttl={self.negative_ttl}, "
            f"source_timeout={self.source_timeout}, config_path={self.config_path}, "
            f"init_startup={self.init_startup}, log_level={self.log_level!r})"
        )


def go_duration(text: str) -> float:
    """Parse a Go duration (`"300s"`, `"1m30s"`, `"1.5h"`, `"250ms"`, `"0"`) into seconds.

    Raises:
        ValueError: Not a non-negative Go duration.
    """
    raw = text.strip()
    if raw.startswith("+"):
        raw = raw[1:]
    if raw == "0":
        return 0.0
    if not raw:
        raise ValueError("expected a duration such as '300s' or '1m30s'")
    total = 0.0
    position = 0
    while position < len(raw):
        match = _GO_PART.match(raw, position)
        if match is None:
            raise ValueError(f"{text!r} is not a duration such as '300s', '1m30s' or '1.5h'")
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        position = match.end()
    if not math.isfinite(total):
        raise ValueError(f"{text!r} is too long a duration")
    return total


def _seconds_or_duration(text: str) -> float:
    """A plain number of seconds (as the AWS extension takes), or a Go duration."""
    try:
        value = float(text)
    except ValueError:
        return go_duration(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("expected a finite, non-negative number of seconds")
    return value


def _milliseconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("expected a positive number of milliseconds")
    return value / 1000


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError("expected a port number from 1 to 65535")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("expected an integer greater than 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds_or_duration(text)
    if value <= 0:
        raise ValueError("expected a positive number of seconds")
    return value


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _log_level(text: str) -> str:
    level = _LOG_LEVELS.get(text.strip().lower())
    if level is None:
        raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}")
    return level


class _Reader:
    """Reads one variable at a time, naming it in any error."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, *names: str) -> tuple[str, str] | None:
        for name in names:
            value = self._environ.get(name, "").strip()
            if value:
                return name, value
        return None

    def get(self, convert: Callable[[str], T], *names: str, default: T) -> T:
        found = self.raw(*names)
        if found is None:
            return default
        name, value = found
        try:
            return convert(value)
        except ValueError as exc:
            raise ConfigurationError(f"{name}={value!r}: {exc}") from None


def read_settings(environ: Mapping[str, str] | None = None) -> ExtensionSettings:
    """Read the extension's settings from `environ` (default `os.environ`).

    Raises:
        ConfigurationError: A malformed variable, naming it and what was expected.
    """
    env = os.environ if environ is None else environ
    read = _Reader(env)
    parameters_ttl = read.get(
        go_duration, "POLYCACHE_EXTENSION_TTL", "CACHE_EXTENSION_TTL", default=300.0
    )
    config = read.raw("POLYCACHE_EXTENSION_CONFIG")
    if config is not None:
        config_path: Path | None = Path(config[1])
    else:
        task_root = env.get("LAMBDA_TASK_ROOT", "").strip() or "/var/task"
        config_path = Path(task_root) / "config.yaml"
    runtime_api = read.raw("AWS_LAMBDA_RUNTIME_API")
    name = read.raw("POLYCACHE_EXTENSION_NAME")
    token = env.get("AWS_SESSION_TOKEN") or None
    max_item_bytes = read.get(
        _positive_int, "POLYCACHE_EXTENSION_MAX_ITEM_BYTES", default=DEFAULT_MAX_ITEM_BYTES
    )
    max_bytes = read.get(_positive_int, "POLYCACHE_EXTENSION_MAX_BYTES", default=DEFAULT_MAX_BYTES)
    if max_item_bytes > max_bytes:
        raise ConfigurationError(
            f"POLYCACHE_EXTENSION_MAX_ITEM_BYTES={max_item_bytes} is over "
            f"POLYCACHE_EXTENSION_MAX_BYTES={max_bytes}: one value could not be stored"
        )
    max_inflight_bytes = read.get(
        _positive_int, "POLYCACHE_EXTENSION_MAX_INFLIGHT_BYTES", default=4 * max_item_bytes
    )
    if max_inflight_bytes < max_item_bytes:
        raise ConfigurationError(
            f"POLYCACHE_EXTENSION_MAX_INFLIGHT_BYTES={max_inflight_bytes} is under "
            f"POLYCACHE_EXTENSION_MAX_ITEM_BYTES={max_item_bytes}: the largest value could "
            "never be received"
        )
    return ExtensionSettings(
        max_inflight_bytes=max_inflight_bytes,
        idle_timeout=read.get(
            _positive_seconds, "POLYCACHE_EXTENSION_IDLE_TIMEOUT", default=DEFAULT_IDLE_TIMEOUT
        ),
        body_timeout=read.get(
            _positive_seconds, "POLYCACHE_EXTENSION_BODY_TIMEOUT", default=DEFAULT_BODY_TIMEOUT
        ),
        max_connections=read.get(
            _positive_int,
            "POLYCACHE_EXTENSION_MAX_CONNECTIONS",
            default=DEFAULT_MAX_CONNECTIONS,
        ),
        port=read.get(
            _port,
            "POLYCACHE_EXTENSION_PORT",
            "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
            default=DEFAULT_PORT,
        ),
        runtime_api=runtime_api[1] if runtime_api else None,
        name=name[1] if name else "polycache-extension",
        token=token,
        max_item_bytes=max_item_bytes,
        max_bytes=max_bytes,
        max_entries=read.get(
            _positive_int,
            "POLYCACHE_EXTENSION_MAX_ENTRIES",
            "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE",
            default=10_000,
        ),
        parameters_ttl=parameters_ttl,
        ssm_ttl=read.get(_seconds_or_duration, "SSM_PARAMETER_STORE_TTL", default=300.0),
        secrets_ttl=read.get(_seconds_or_duration, "SECRETS_MANAGER_TTL", default=300.0),
        stale_ttl=read.get(_seconds_or_duration, "POLYCACHE_EXTENSION_STALE_TTL", default=0.0),
        negative_ttl=read.get(
            _seconds_or_duration, "POLYCACHE_EXTENSION_NEGATIVE_TTL", default=30.0
        ),
        source_timeout=read.get(
            _milliseconds,
            "POLYCACHE_EXTENSION_SOURCE_TIMEOUT_MILLIS",
            "SSM_PARAMETER_STORE_TIMEOUT_MILLIS",
            "SECRETS_MANAGER_TIMEOUT_MILLIS",
            default=5.0,
        ),
        config_path=config_path,
        init_startup=read.get(_flag, "CACHE_EXTENSION_INIT_STARTUP", default=True),
        log_level=read.get(
            _log_level,
            "POLYCACHE_EXTENSION_LOG_LEVEL",
            "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL",
            default="INFO",
        ),
    )
