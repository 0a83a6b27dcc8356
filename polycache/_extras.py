"""One check for optional dependencies: a missing extra fails where its feature is chosen."""

from __future__ import annotations

import importlib.util

from polycache._errors import ConfigurationError

__all__ = ["require_extra"]


def require_extra(feature: str, extra: str, *modules: str) -> None:
    """Raise `ConfigurationError` naming the pip command if any of `modules` is not installed.

    Checked with `importlib.util.find_spec`, which imports nothing: a backend or loader calls it
    at construction, so a missing extra is named there, never later as a failing call.

    Args:
        feature: What needs the modules, as the user wrote it (`"the momento:// backend"`).
        extra: The polycache extra that installs them (`"momento"`).
        *modules: The top-level modules to look for.

    Raises:
        ConfigurationError: A module is missing.
    """
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigurationError(
                f"{feature} needs its extra: pip install 'polycache[{extra}]' "
                f"({module} is not installed)"
            )
