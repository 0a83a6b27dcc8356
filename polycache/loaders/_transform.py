"""Value transforms shared by every built-in loader, as in Powertools' `parameters`.

`json` parses the value as JSON, `binary` decodes it from base64, and `auto` picks one of those
by the name's suffix (`.json`, `.binary`) and leaves any other value as it is.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal, get_args

from polycache._errors import ConfigurationError, LoaderError
from polycache._serializers import invalid_document

__all__ = ["Transform", "apply_transform", "check_transform"]

Transform = Literal["json", "binary", "auto"]
"""A transform's name: `"json"`, `"binary"` (base64) or `"auto"` (by the name's suffix)."""

_TRANSFORMS: frozenset[str] = frozenset(get_args(Transform))


def check_transform(transform: object) -> Transform | None:
    """Validate a `transform` argument.

    Args:
        transform: `"json"`, `"binary"`, `"auto"` or None.

    Returns:
        The transform, unchanged.

    Raises:
        ConfigurationError: Anything else, named.
    """
    if transform is None:
        return None
    if not isinstance(transform, str) or transform not in _TRANSFORMS:
        raise ConfigurationError(
            f"transform must be one of 'json', 'binary', 'auto' or None, got {transform!r}"
        )
    return transform  # type: ignore[return-value]  # narrowed by the membership test above


def _chosen(transform: Transform, name: str) -> Literal["json", "binary"] | None:
    if transform != "auto":
        return transform
    # The suffix of the name proper: "/app/config.json:3" and "table?id=1" drop their selectors.
    segment = name.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    suffix = segment.rpartition(".")[2].lower() if "." in segment else ""
    if suffix == "json":
        return "json"
    if suffix == "binary":
        return "binary"
    return None


def apply_transform(value: Any, transform: Transform | None, *, name: str, what: str) -> Any:
    """Apply `transform` to a loaded `value` (str or bytes).

    Args:
        value: The value as the source returned it.
        transform: The transform, or None to return `value` unchanged.
        name: The name after the scheme, whose suffix `auto` looks at.
        what: The source and name, for the error message (`"SSM parameter '/a'"`).

    Returns:
        The parsed JSON, the decoded bytes, or `value` itself.

    Raises:
        LoaderError: The value is not valid JSON or base64. The message names the source, the
            parse error's kind and position, never the value; the chained error holds no part
            of the value either.
    """
    if transform is None:
        return value
    chosen = _chosen(transform, name)
    if chosen is None:
        return value
    if not isinstance(value, str | bytes | bytearray):
        raise LoaderError(
            f"cannot apply transform {chosen!r} to {what}: expected str or bytes, "
            f"got {type(value).__name__}"
        )
    if chosen == "json":
        try:
            return json.loads(value)
        except ValueError as exc:
            cause = invalid_document(exc)
        raise LoaderError(
            f"cannot apply transform 'json' to {what}: not valid JSON ({cause})"
        ) from cause
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pass
    # binascii's message quotes no data, but it is dropped all the same: one rule for values.
    raise LoaderError(f"cannot apply transform 'binary' to {what}: not valid base64")
