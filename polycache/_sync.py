"""`cache.sync`: the cache for sync code, on the event loop `lambda_handler` keeps.

A sync Lambda handler (most are) gets the same cache as async code: its calls run on the one
event loop of the execution environment (`polycache._lambda._environment_loop`), so
single-flight, loop-bound clients and background refreshes carry over from call to call and to
the next `lambda_handler` invocation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from polycache._config import Duration
from polycache._errors import ConfigurationError
from polycache._lambda import run_on_environment_loop
from polycache.backends.memory import MemoryBackend

if TYPE_CHECKING:
    from polycache._cache import Cache

__all__ = ["SyncCache"]

T = TypeVar("T")

_get_running_loop: Final = asyncio._get_running_loop

# One thread at a time runs the environment's loop through the bridge. A second thread is
# refused rather than made to wait: it could be the very thread the first one's loader waits
# for (asyncio.to_thread), and waiting would then never end.


class SyncCache:
    """`Cache`'s operations for sync code; reach it as `cache.sync`.

    Each call runs the async operation to completion on the execution environment's event loop
    (the one `polycache.lambda_handler` uses), so a sync handler keeps single-flight, loop-bound
    clients and background refreshes between calls and invocations. Loaders stay `async def`.

    Example:
        ```python
        cache = polycache.Cache()

        def handler(event, context):  # a sync Lambda handler
            return {"url": cache.sync.get("ssm:/prod/db/url")}
        ```

    Raises:
        ConfigurationError: (from every method) Called while an event loop runs in this thread
            (use `await cache.get(...)` there), or while another thread is using the loop.
    """

    __slots__ = ("_cache", "_fast")

    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        # A memory hit, set or delete completes without touching the loop: these are tried
        # without running it (see _run).
        self._fast = isinstance(cache.backend, MemoryBackend)

    def __repr__(self) -> str:
        return f"SyncCache({self._cache!r})"

    def get(self, key: str, default: Any = None) -> Any:
        """`await cache.get(key, default)`, from sync code."""
        return _run("get", self._fast, self._cache.get, key, default)

    def get_many(
        self, keys: Iterable[str], default: Any = None, *, return_exceptions: bool = False
    ) -> dict[str, Any]:
        """`await cache.get_many(keys, ...)`, from sync code: the keys load concurrently."""
        result: dict[str, Any] = _run(
            "get_many",
            False,  # it always uses the loop
            self._cache.get_many,
            keys,
            default,
            return_exceptions=return_exceptions,
        )
        return result

    def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        *,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
    ) -> Any:
        """`await cache.get_or_load(key, loader, ...)`, from sync code; `loader` stays async."""
        return _run(
            "get_or_load",
            self._fast,
            self._cache.get_or_load,
            key,
            loader,
            ttl=ttl,
            stale_ttl=stale_ttl,
        )

    def refresh(self, key: str, loader: Callable[[], Awaitable[Any]] | None = None) -> Any:
        """`await cache.refresh(key, loader)`, from sync code."""
        return _run("refresh", False, self._cache.refresh, key, loader)

    def set(
        self,
        key: str,
        value: Any,
        *,
        ttl: Duration | None = None,
        stale_ttl: Duration | None = None,
    ) -> None:
        """`await cache.set(key, value, ...)`, from sync code."""
        _run("set", self._fast, self._cache.set, key, value, ttl=ttl, stale_ttl=stale_ttl)

    def delete(self, key: str) -> None:
        """`await cache.delete(key)`, from sync code."""
        _run("delete", self._fast, self._cache.delete, key)


def _run(
    name: str,
    fast: bool,
    operation: Callable[..., Coroutine[Any, Any, T]],
    /,
    *args: Any,
    **kwargs: Any,
) -> T:
    """Run `operation(*args, **kwargs)` to completion on the environment's loop."""
    if _get_running_loop() is not None:
        raise ConfigurationError(
            f"cache.sync.{name}() was called from code running in an event loop, which it "
            f"would have to block; in async code use await cache.{name}(...)"
        )
    if fast:
        # A fresh hit in memory never touches the event loop, and running the loop costs
        # more than the hit (two selector polls). So the coroutine is first stepped with no
        # loop running: a hit returns at once; anything else asks for the running loop before
        # it has changed anything, gets RuntimeError, and is run on the loop.
        coroutine = operation(*args, **kwargs)
        try:
            coroutine.send(None)
        except StopIteration as stop:
            result: T = stop.value
            return result
        except RuntimeError:
            coroutine.close()
        else:  # pragma: no cover - a memory read that awaited with no loop: a core change
            coroutine.close()
            raise AssertionError(f"cache.{name} awaited with no event loop running")
    try:
        return run_on_environment_loop(operation, *args, **kwargs)
    except ConfigurationError as exc:
        raise ConfigurationError(f"cache.sync.{name}(): {exc}") from None
