"""`lambda_handler`: the sync entry point Lambda calls, on one event loop per environment."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from polycache._errors import ConfigurationError

__all__ = ["lambda_handler"]

Result = TypeVar("Result")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None


def _environment_loop() -> asyncio.AbstractEventLoop:
    """The event loop of this execution environment, created on first use."""
    global _loop, _loop_pid
    with _lock:
        # A forked child must not share its parent's loop (its selector is the parent's).
        if _loop is None or _loop.is_closed() or _loop_pid != os.getpid():
            _loop = asyncio.new_event_loop()
            _loop_pid = os.getpid()
        return _loop


def lambda_handler(
    handler: Callable[..., Coroutine[Any, Any, Result]],
) -> Callable[..., Result]:
    """Turn `async def handler(event, context)` into the sync function Lambda calls.

    Every invocation runs on the same event loop, kept for the life of the execution
    environment, unlike `asyncio.run()` per invocation, which makes a new loop each time.
    Clients, locks and background refreshes made in one invocation therefore keep working in
    the next: a refresh still running when an invocation returns carries on when the next one
    starts (Lambda freezes the process in between).

    Example:
        ```python
        cache = polycache.Cache.from_env()

        @polycache.lambda_handler
        async def handler(event, context):
            return {"url": await cache.get("ssm:/prod/db/url")}
        ```

    Raises:
        ConfigurationError: `handler` is not an `async def` function.
    """
    if not inspect.iscoroutinefunction(handler):
        raise ConfigurationError(
            f"lambda_handler wraps an async def handler(event, context), got {handler!r}"
        )

    @functools.wraps(handler)
    def run(event: Any, context: Any, *args: Any, **kwargs: Any) -> Result:
        # Extra arguments pass through, for decorators stacked above (polycache.inject).
        loop = _environment_loop()
        if loop.is_running():
            raise RuntimeError("lambda_handler's handler was called from inside its own loop")
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(handler(event, context, *args, **kwargs))

    return run
