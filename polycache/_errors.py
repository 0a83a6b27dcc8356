"""The exception tree: every error polycache raises derives from `PolycacheError`."""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendTimeout",
    "ConfigurationError",
    "LoaderError",
    "PolycacheError",
    "SerializationError",
    "SourceNotFound",
]


class PolycacheError(Exception):
    """The root of every error polycache raises."""


class ConfigurationError(PolycacheError, ValueError):
    """A bad URL, environment value, argument, unknown scheme, or a missing extra."""


class BackendError(PolycacheError):
    """The backend failed: network, protocol or authentication."""


class BackendTimeout(BackendError, TimeoutError):  # noqa: N818 - the design names it
    """A backend operation did not finish within `backend_timeout`."""


class LoaderError(PolycacheError):
    """A loader failed; the source's own error is chained as `__cause__`.

    Attributes:
        key: The cache key whose load failed (None if the loader raised it without one).
    """

    def __init__(self, message: str = "", *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class SourceNotFound(LoaderError):  # noqa: N818 - the design names it; it is an error all the same
    """The source says the name does not exist (remembered for `negative_ttl`)."""


class SerializationError(PolycacheError, ValueError):
    """A value that cannot be stored, or stored bytes that cannot be read."""
