"""The extension's key/value wire format: an entry's freshness travels in these headers.

Shared by the `extension://` backend (the client) and the extension process (the server), so
that the two cannot drift apart.
"""

from __future__ import annotations

import urllib.parse
from typing import Final

from polycache._contracts import Entry

__all__ = [
    "EXPIRES_AT",
    "FRESH_UNTIL",
    "NEGATIVE",
    "STALE_UNTIL",
    "VALIDATOR",
    "entry_headers",
    "validator_from_header",
]

FRESH_UNTIL: Final = "X-Polycache-Fresh-Until"
STALE_UNTIL: Final = "X-Polycache-Stale-Until"
EXPIRES_AT: Final = "X-Polycache-Expires-At"
VALIDATOR: Final = "X-Polycache-Validator"
NEGATIVE: Final = "X-Polycache-Negative"


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
