"""The polycache extension's wire vocabulary, shared by the `extension://` client and the server.

One place for the port, the item limit, the token header, the key/value path and the headers
that carry an entry's freshness, so that the client and the extension cannot drift apart.

The key/value API carries a value's bytes as they are: `GET /v1/kv/{key}` answers exactly the
bytes that were PUT, its `Content-Type` and freshness in headers. A Node or Java function (or
curl) reads and writes the same entries; see the "Lambda extension" page of the docs.
"""

from __future__ import annotations

import urllib.parse
from typing import Final

from polycache._contracts import Entry

# The serializer's tag bytes: the one place that knows them besides the serializer itself.
from polycache._serializers import _BYTES as BYTES_TAG
from polycache._serializers import _JSON as JSON_TAG
from polycache._serializers import _PICKLE as PICKLE_TAG
from polycache._serializers import _STR as STR_TAG

__all__ = [
    "DEFAULT_MAX_ITEM_BYTES",
    "DEFAULT_PORT",
    "EXPIRES_AT",
    "FRESH_UNTIL",
    "KV_PATH",
    "MAX_KEY_BYTES",
    "NEGATIVE",
    "OPAQUE_TYPE",
    "STALE_UNTIL",
    "TOKEN_HEADER",
    "VALIDATOR",
    "decode_key",
    "encode_key",
    "entry_headers",
    "validator_from_header",
    "value_from_wire",
    "value_to_wire",
]

DEFAULT_PORT: Final = 4000
"""The extension's port unless `POLYCACHE_EXTENSION_PORT` (the AWS sample cache extension's)."""

DEFAULT_MAX_ITEM_BYTES: Final = 1024 * 1024
"""The largest value stored unless `POLYCACHE_EXTENSION_MAX_ITEM_BYTES`."""

MAX_KEY_BYTES: Final = 2048
"""The longest key, in UTF-8 bytes (percent-encoded it fills at most 6 KiB of a request line)."""

KV_PATH: Final = "/v1/kv/"
TOKEN_HEADER: Final = "X-Aws-Parameters-Secrets-Token"  # noqa: S105 - a header name

FRESH_UNTIL: Final = "X-Polycache-Fresh-Until"
STALE_UNTIL: Final = "X-Polycache-Stale-Until"
EXPIRES_AT: Final = "X-Polycache-Expires-At"
VALIDATOR: Final = "X-Polycache-Validator"
NEGATIVE: Final = "X-Polycache-Negative"

OPAQUE_TYPE: Final = "application/vnd.polycache.entry"
"""Bytes the `Cache`'s serializer did not tag (a backend-level write): stored exactly."""

# The serializer's tag byte says what the bytes are; on the wire the Content-Type says it, and
# the body is the value alone, so that any runtime can read it.
_TYPE_OF_TAG: Final = {
    STR_TAG: "text/plain; charset=utf-8",
    JSON_TAG: "application/json",
    BYTES_TAG: "application/octet-stream",
    PICKLE_TAG: "application/x-python-pickle",
}
_TAG_OF_TYPE: Final = {
    "text/plain": STR_TAG,
    "application/json": JSON_TAG,
    "application/x-python-pickle": PICKLE_TAG,
}
_UTF8: Final = frozenset({"utf-8", "utf8", "us-ascii"})


def encode_key(key: str) -> str:
    """The key as a path segment: every UTF-8 byte percent-encoded, so no URL rule can touch it.

    Raises:
        ValueError: The key is empty, over `MAX_KEY_BYTES`, or not encodable as UTF-8.
    """
    data = key.encode("utf-8")
    if not data:
        raise ValueError("the key is empty")
    if len(data) > MAX_KEY_BYTES:
        raise ValueError(
            f"the key is {len(data)} bytes in UTF-8; the extension takes at most {MAX_KEY_BYTES}"
        )
    return "".join([f"%{byte:02X}" for byte in data])


def decode_key(raw_path_segment: str) -> str:
    """The key from the raw (still percent-encoded) path after `KV_PATH`.

    Raises:
        ValueError: Empty, not percent-encoded UTF-8, or over `MAX_KEY_BYTES`.
    """
    data = urllib.parse.unquote_to_bytes(raw_path_segment)
    if not data:
        raise ValueError("the key is empty")
    if len(data) > MAX_KEY_BYTES:
        raise ValueError(f"the key is over {MAX_KEY_BYTES} bytes in UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the key is not percent-encoded UTF-8") from None


def value_to_wire(value: bytes) -> tuple[str, bytes]:
    """The Content-Type and body for an entry's bytes as the `Cache`'s serializer wrote them."""
    content_type = _TYPE_OF_TAG.get(value[:1])
    if content_type is None:
        return OPAQUE_TYPE, value
    return content_type, value[1:]


def value_from_wire(content_type: str | None, body: bytes) -> bytes:
    """The entry's bytes, tagged as the `Cache`'s serializer reads them, for a body and its type.

    `text/plain` (UTF-8) reads as str, `application/json` as its JSON value, anything else
    (`application/octet-stream`, `image/png`, none) as bytes.
    """
    media_type, _, parameters = (content_type or "").partition(";")
    media_type = media_type.strip().lower()
    if media_type == OPAQUE_TYPE:
        return body
    tag = _TAG_OF_TYPE.get(media_type)
    if tag == STR_TAG and not _utf8_charset(parameters):
        tag = None
    return (tag or BYTES_TAG) + body


def _utf8_charset(parameters: str) -> bool:
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower() in _UTF8
    return True


def entry_headers(entry: Entry) -> dict[str, str]:
    """The headers that carry `entry`'s freshness, validator and negative flag."""
    headers = {
        FRESH_UNTIL: repr(entry.fresh_until),
        STALE_UNTIL: repr(entry.stale_until),
        EXPIRES_AT: repr(entry.expires_at),
    }
    if entry.validator is not None:
        # An ETag holds quotes and may hold any character; a header value may not.
        headers[VALIDATOR] = urllib.parse.quote(entry.validator, safe="")
    if entry.negative:
        headers[NEGATIVE] = "1"
    return headers


def validator_from_header(value: str | None) -> str | None:
    """Decode the validator header written by `entry_headers`."""
    return urllib.parse.unquote(value) if value is not None else None
