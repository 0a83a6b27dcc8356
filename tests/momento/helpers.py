"""Helpers for the Momento tests: well-formed fake API keys and a client factory that records."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any


def _segment(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def fake_api_key(subject: str = "polycache-tests") -> str:
    """A token shaped like a Momento v2 API key (a JWT whose `t` claim is `g`); not a real key."""
    header = _segment({"alg": "HS256", "typ": "JWT"})
    payload = _segment({"t": "g", "sub": subject})
    return f"{header}.{payload}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"


class RecordingFactory:
    """A client factory that builds real `CacheClientAsync` clients and remembers how."""

    def __init__(self) -> None:
        self.built: list[tuple[Any, Any, timedelta, Any]] = []

    def __call__(self, configuration: Any, provider: Any, default_ttl: timedelta) -> Any:
        from momento import CacheClientAsync

        client = CacheClientAsync(configuration, provider, default_ttl)
        self.built.append((configuration, provider, default_ttl, client))
        return client
