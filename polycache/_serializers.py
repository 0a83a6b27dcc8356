"""Serializers for remote backends: JSON by default, pickle only when asked for."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from polycache._errors import ConfigurationError, SerializationError

__all__ = [
    "InvalidDocumentError",
    "JsonSerializer",
    "PickleSerializer",
    "Serializer",
    "invalid_document",
    "serializer_from",
]

# One tag byte says how the rest was encoded, so that str and bytes round-trip exactly and
# cost no JSON encoding at all.
_STR = b"s"
_BYTES = b"b"
_JSON = b"j"
_PICKLE = b"p"


class InvalidDocumentError(ValueError):
    """A document that could not be parsed, described by kind and position only.

    Stands in for `json.JSONDecodeError` and `UnicodeDecodeError` in error chains: those keep the
    whole document (`.doc`) or the undecodable bytes (`.object`, and in their `repr`), and the
    document may be a secret.
    """


def invalid_document(exc: ValueError) -> InvalidDocumentError:
    """Describe a JSON or text decoding error without any byte of the document.

    Args:
        exc: The error `json.loads` or `bytes.decode` raised.

    Returns:
        An `InvalidDocumentError` naming the error's type, reason and position.
    """
    import json  # already imported by whoever raised a JSONDecodeError

    if isinstance(exc, json.JSONDecodeError):
        where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    elif isinstance(exc, UnicodeDecodeError):
        where = f"{exc.encoding} cannot decode the byte at position {exc.start}: {exc.reason}"
    else:
        where = "unreadable"
    return InvalidDocumentError(f"{type(exc).__name__}: {where}")


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes for a remote backend and back."""

    def dumps(self, value: Any) -> bytes:
        """Encode `value`; raise `SerializationError` if it cannot be encoded."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode bytes written by `dumps`; raise `SerializationError` if they are unreadable."""
        ...


def _check_json(value: object, path: str) -> None:
    # json.dumps would quietly turn tuples into lists and int keys into strings; a cache must
    # give back what it was given, or say it cannot.
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return
    if isinstance(value, list) and kind is list:
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
        return
    if isinstance(value, dict) and kind is dict:
        for name, item in value.items():
            if type(name) is not str:
                raise SerializationError(
                    f"JSON serializer: key {name!r} at {path} is {type(name).__name__}, "
                    "expected str (use serializer='pickle' for other keys)"
                )
            _check_json(item, f"{path}[{name!r}]")
        return
    raise SerializationError(
        f"JSON serializer cannot store {kind.__name__} at {path}: expected str, bytes, or JSON "
        "types (dict with str keys, list, int, float, bool, None); use serializer='pickle' "
        "for other types"
    )


class JsonSerializer:
    """The default: str and bytes exactly, and JSON types (dict, list, numbers, bool, None)."""

    def __repr__(self) -> str:
        return "JsonSerializer()"

    def dumps(self, value: Any) -> bytes:
        """Encode `value`."""
        if type(value) is str:
            return _STR + str.encode(value, "utf-8", "surrogatepass")
        if type(value) is bytes:
            return _BYTES + bytes(value)
        _check_json(value, "value")
        import json  # imported on first use: only remote backends serialize

        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except ValueError as exc:
            raise SerializationError(f"JSON serializer: {exc}") from exc
        return _JSON + text.encode("utf-8")

    def loads(self, data: bytes) -> Any:
        """Decode bytes written by `dumps`."""
        tag, body = data[:1], data[1:]
        import json  # imported on first use: only remote backends serialize

        try:
            if tag == _STR:
                return body.decode("utf-8", "surrogatepass")
            if tag == _BYTES:
                return bytes(body)
            if tag == _JSON:
                return json.loads(body)
        except ValueError as exc:
            cause: InvalidDocumentError | None = invalid_document(exc)
        else:
            cause = None
        if cause is not None:
            # Raised outside the handler, so that the original error (which holds the stored
            # bytes) is neither the cause nor the context of this one.
            raise SerializationError(f"stored value is not valid {tag!r} data ({cause})") from cause
        raise SerializationError(
            f"stored value has tag {tag!r}, which the JSON serializer does not read "
            "(written by another serializer?)"
        )


class PickleSerializer:
    """Any picklable value. Only for caches whose writers you trust: unpickling runs code."""

    def __init__(self, protocol: int | None = None) -> None:
        self._protocol = protocol

    def __repr__(self) -> str:
        return f"PickleSerializer(protocol={self._protocol})"

    def dumps(self, value: Any) -> bytes:
        """Encode `value` (str and bytes without pickling)."""
        if type(value) is str:
            return _STR + str.encode(value, "utf-8", "surrogatepass")
        if type(value) is bytes:
            return _BYTES + bytes(value)
        import pickle  # only callers who opted into pickle pay its import

        try:
            return _PICKLE + pickle.dumps(value, protocol=self._protocol or pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise SerializationError(f"cannot pickle {type(value).__name__}: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        """Decode bytes written by `dumps` (or by `JsonSerializer`)."""
        if data[:1] == _PICKLE:
            import pickle  # only callers who opted into pickle pay its import

            try:
                return pickle.loads(data[1:])  # noqa: S301 - opted into explicitly by the user
            except Exception as exc:
                raise SerializationError(f"stored pickle cannot be read: {exc}") from exc
        return JsonSerializer().loads(data)


def serializer_from(value: str | Serializer | None) -> Serializer:
    """Resolve the `serializer` argument: `"json"` (default), `"pickle"`, or an object."""
    if value is None or value == "json":
        return JsonSerializer()
    if value == "pickle":
        return PickleSerializer()
    if isinstance(value, Serializer) and not isinstance(value, str):
        return value
    raise ConfigurationError(
        f"serializer must be 'json', 'pickle' or an object with dumps() and loads(), got {value!r}"
    )
