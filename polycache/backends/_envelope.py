"""The byte layout of an `Entry` in a remote backend that stores one blob per key.

    b"pc1" | flags: u8 | fresh_until, stale_until, expires_at: f64
          | [validator length: u16, validator: utf-8] | value

Times are epoch seconds, so an entry keeps its freshness across processes. The value is what
the `Cache`'s serializer produced.
"""

from __future__ import annotations

import struct

from polycache._contracts import Entry
from polycache._errors import SerializationError

__all__ = ["pack", "unpack"]

_MAGIC = b"pc1"
_HEADER = struct.Struct("!3sBddd")
_LENGTH = struct.Struct("!H")
_NEGATIVE = 1
_VALIDATOR = 2


def pack(entry: Entry) -> bytes:
    """Encode an entry whose value is bytes."""
    value = entry.value
    if not isinstance(value, bytes | bytearray | memoryview):
        raise SerializationError(
            f"a remote backend stores bytes, got {type(value).__name__} (serialize it first)"
        )
    flags = (_NEGATIVE if entry.negative else 0) | (_VALIDATOR if entry.validator else 0)
    parts = [_HEADER.pack(_MAGIC, flags, entry.fresh_until, entry.stale_until, entry.expires_at)]
    if entry.validator:
        validator = entry.validator.encode("utf-8")
        if len(validator) > 0xFFFF:
            raise SerializationError("an entry's validator is over 65535 bytes")
        parts += [_LENGTH.pack(len(validator)), validator]
    parts.append(bytes(value))
    return b"".join(parts)


def unpack(data: bytes) -> Entry:
    """Decode bytes written by `pack`.

    Raises:
        SerializationError: The bytes were not written by `pack`.
    """
    if len(data) < _HEADER.size or data[:3] != _MAGIC:
        raise SerializationError("stored bytes are not a polycache entry (wrong header)")
    _, flags, fresh_until, stale_until, expires_at = _HEADER.unpack_from(data)
    offset = _HEADER.size
    validator = None
    if flags & _VALIDATOR:
        if len(data) < offset + _LENGTH.size:
            raise SerializationError("stored polycache entry is truncated")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if len(data) < offset + length:
            raise SerializationError("stored polycache entry is truncated")
        try:
            validator = data[offset : offset + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SerializationError("stored polycache entry has a malformed validator") from exc
        offset += length
    return Entry(
        value=bytes(data[offset:]),
        fresh_until=fresh_until,
        stale_until=stale_until,
        expires_at=expires_at,
        validator=validator,
        negative=bool(flags & _NEGATIVE),
    )
