"""Fakes for the core's unit tests: a remote-like backend that can fail or hang, and loaders."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from polycache import BackendError, Entry, Loaded, SourceNotFound


class BytesBackend:
    """Stores bytes like a remote backend would; can be told to fail or to hang."""

    stores_objects = False

    def __init__(self, max_item_bytes: int | None = 1000) -> None:
        self.max_item_bytes = max_item_bytes
        self.entries: dict[str, Entry] = {}
        self.failing = False
        self.hang_seconds = 0.0
        self.calls: list[tuple[str, str]] = []

    async def _maybe_fail(self, operation: str, key: str) -> None:
        self.calls.append((operation, key))
        if self.hang_seconds:
            await asyncio.sleep(self.hang_seconds)
        if self.failing:
            raise BackendError(f"backend is down ({operation} {key})")

    async def get(self, key: str) -> Entry | None:
        await self._maybe_fail("get", key)
        return self.entries.get(key)

    async def set(self, key: str, entry: Entry) -> None:
        await self._maybe_fail("set", key)
        assert isinstance(entry.value, bytes)
        self.entries[key] = entry

    async def delete(self, key: str) -> None:
        await self._maybe_fail("delete", key)
        self.entries.pop(key, None)

    async def aclose(self) -> None:
        self.calls.append(("aclose", ""))


class CountingLoader:
    """`await loader(name)` returns f"{name}#{calls}"; can fail, be slow, or say not found."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[str] = []
        self.error: Exception | None = None
        self.missing: set[str] = set()

    async def __call__(self, name: str) -> Any:
        self.calls.append(name)
        if self.delay:
            await asyncio.sleep(self.delay)
        if name in self.missing:
            raise SourceNotFound(f"{name} does not exist")
        if self.error is not None:
            raise self.error
        return f"{name}#{len(self.calls)}"


class BatchCountingLoader(CountingLoader):
    """Also loads many names in one call, recording each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.failing_names: set[str] = set()

    async def __call__(self, name: str) -> Any:
        if name in self.failing_names:
            self.calls.append(name)
            raise RuntimeError(f"source failed for {name}")
        return await super().__call__(name)

    async def load_many(self, names: Sequence[str]) -> Mapping[str, Any]:
        self.batches.append(list(names))
        results: dict[str, Any] = {}
        for name in names:
            if name in self.missing:
                continue
            if name in self.failing_names:
                results[name] = RuntimeError(f"source failed for {name}")
            else:
                results[name] = f"{name}@batch{len(self.batches)}"
        return results


class VersionedLoader:
    """A conditional loader over a mutable object with an ETag-like version."""

    def __init__(self) -> None:
        self.value = "v1-body"
        self.version = 1
        self.downloads = 0
        self.revalidations = 0

    async def __call__(self, name: str) -> Loaded:
        self.downloads += 1
        return Loaded(self.value, validator=f"etag-{self.version}")

    async def load_conditional(self, name: str, validator: str | None) -> Loaded:
        self.revalidations += 1
        if validator == f"etag-{self.version}":
            return Loaded(None, validator, modified=False)
        return await self(name)
