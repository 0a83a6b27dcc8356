"""The backend registry: URL scheme -> factory. Built-ins are imported on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from polycache._contracts import Backend, BackendFactory
from polycache._errors import ConfigurationError

if TYPE_CHECKING:
    from urllib.parse import SplitResult

__all__ = ["backend_from_url", "parse_options", "register_backend", "split_url"]

T = TypeVar("T")

# scheme -> (module, attribute, extra that provides its dependencies)
_BUILTIN: dict[str, tuple[str, str, str | None]] = {
    "memory": ("polycache.backends.memory", "MemoryBackend", None),
    "extension": ("polycache.backends.extension", "ExtensionBackend", "extension"),
    "momento": ("polycache.backends.momento", "MomentoBackend", "momento"),
    "redis": ("polycache.backends.redis", "RedisBackend", "redis"),
    "rediss": ("polycache.backends.redis", "RedisBackend", "redis"),
    "valkey": ("polycache.backends.redis", "RedisBackend", "redis"),
    "valkeys": ("polycache.backends.redis", "RedisBackend", "redis"),
}
_registered: dict[str, BackendFactory] = {}


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Register a backend for URLs `"{scheme}://..."`.

    Args:
        scheme: The URL scheme, letters, digits, `+`, `-` or `.`, starting with a letter.
        factory: Called with the whole URL; returns a `Backend`. It should validate the URL and
            raise `ConfigurationError` for a bad one.
    """
    if (
        not isinstance(scheme, str)
        or not scheme
        or not scheme[0].isalpha()
        or not all(character.isalnum() or character in "+-." for character in scheme)
    ):
        raise ConfigurationError(
            f"backend scheme must be a URL scheme such as 'redis', got {scheme!r}"
        )
    if not callable(factory):
        raise ConfigurationError(
            f"backend factory for {scheme!r} must be callable, got {factory!r}"
        )
    _registered[scheme.lower()] = factory


def split_url(url: str) -> SplitResult:
    """Split a backend URL, raising `ConfigurationError` if it is not `scheme://...`."""
    if not isinstance(url, str):
        raise ConfigurationError(f"backend URL must be a str, got {type(url).__name__}")
    from urllib.parse import urlsplit  # 2 ms at import; the default URL needs none

    parts = urlsplit(url.strip())
    if not parts.scheme or "://" not in url:
        raise ConfigurationError(
            f"backend URL {url!r} has no scheme: expected e.g. 'memory://', "
            "'extension://127.0.0.1:4000' or 'momento://CACHE_NAME'"
        )
    return parts


def parse_options(url: str, accepted: Mapping[str, Callable[[str], object]]) -> dict[str, object]:
    """Parse a URL's query into options, each converted by its function in `accepted`.

    Raises:
        ConfigurationError: an option that is unknown, repeated, or whose value is malformed.
    """
    from urllib.parse import parse_qsl  # see split_url

    parts = split_url(url)
    options: dict[str, object] = {}
    for name, raw in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name not in accepted:
            known = ", ".join(sorted(accepted)) or "none"
            raise ConfigurationError(
                f"unknown option {name!r} in backend URL {url!r} (accepted: {known})"
            )
        if name in options:
            raise ConfigurationError(f"option {name!r} is given twice in backend URL {url!r}")
        try:
            options[name] = accepted[name](raw)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"option {name}={raw!r} in backend URL {url!r}: {exc}"
            ) from None
    return options


def positive_int(raw: str) -> int:
    """Convert an option to an int greater than zero."""
    value = int(raw)
    if value <= 0:
        raise ValueError("expected an integer greater than 0")
    return value


def seconds(raw: str) -> float:
    """Convert an option to a finite, non-negative number of seconds."""
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError("expected a finite, non-negative number of seconds")
    return value


def boolean(raw: str) -> bool:
    """Convert an option to a bool (`1`/`0`, `true`/`false`, `yes`/`no`)."""
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _builtin_factory(scheme: str) -> BackendFactory:
    module_name, attribute, extra = _BUILTIN[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None:
            raise
        raise ConfigurationError(
            f"the {scheme}:// backend needs its extra: pip install 'polycache[{extra}]' "
            f"({exc.name or exc} is not installed)"
        ) from exc
    backend_class = getattr(module, attribute)
    return cast(BackendFactory, backend_class.from_url)


def backend_from_url(url: str, *, environ: Mapping[str, str] | None = None) -> Backend:
    """Build the backend that `url` names, validating the URL eagerly.

    Args:
        url: The backend URL.
        environ: The environment the backend reads its own variables from (credentials,
            endpoints); defaults to `os.environ`. A factory gets it if it takes an `environ`
            keyword, as the built-in backends' do.
    """
    scheme = "memory" if url == "memory://" else split_url(url).scheme.lower()
    factory = _registered.get(scheme)
    if factory is None:
        if scheme not in _BUILTIN:
            known = ", ".join(sorted({*_BUILTIN, *_registered}))
            raise ConfigurationError(
                f"unknown backend scheme {scheme!r} in {url!r} (known: {known}; add one with "
                "polycache.register_backend)"
            )
        factory = _builtin_factory(scheme)
    factory_url, near_options = _split_near_options(url)
    if _takes_environ(factory):
        import os

        backend = cast(Any, factory)(
            factory_url, environ=os.environ if environ is None else environ
        )
    else:
        backend = factory(factory_url)
    if not isinstance(backend, Backend):
        raise ConfigurationError(
            f"the factory for {scheme}:// returned {type(backend).__name__}, which is not a Backend"
        )
    if near_options:
        if backend.stores_objects:
            raise ConfigurationError(
                f"local_max_entries and local_ttl add a near-cache in front of a remote backend; "
                f"{scheme}:// already keeps entries in process (in {url!r})"
            )
        from polycache.backends.near import NearCacheBackend

        return NearCacheBackend.from_options(backend, near_options)
    return backend


def _takes_environ(factory: BackendFactory) -> bool:
    import inspect

    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "environ" in parameters or any(
        parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()
    )


# Options every remote backend takes: a near-cache in front of it (polycache.backends.near).
_NEAR_OPTIONS: dict[str, Callable[[str], object]] = {
    "local_max_entries": positive_int,
    "local_ttl": seconds,
}


def _split_near_options(url: str) -> tuple[str, dict[str, object]]:
    """Take the near-cache options out of `url`; the backend's factory never sees them."""
    if "local_" not in url:
        return url, {}
    from urllib.parse import parse_qsl, urlencode

    parts = split_url(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name in _NEAR_OPTIONS for name, _ in pairs):
        return url, {}
    near_query = urlencode([(name, raw) for name, raw in pairs if name in _NEAR_OPTIONS])
    options = parse_options(f"{parts.scheme}://?{near_query}", _NEAR_OPTIONS)
    rest = urlencode([(name, raw) for name, raw in pairs if name not in _NEAR_OPTIONS])
    # Rebuilt by hand: urlunsplit would turn "memory://?..." into "memory:".
    head = url.strip().split("?", 1)[0]
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{head}?{rest}{fragment}" if rest else f"{head}{fragment}", options
