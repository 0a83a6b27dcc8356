"""`lambda_handler`: the sync entry point Lambda calls, on one event loop per environment."""

from __future__ import annotations

import asyncio
import atexit
import functools
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from polycache._emf import EmfMetrics
from polycache._errors import ConfigurationError

if TYPE_CHECKING:
    from polycache._cache import Cache

__all__ = ["lambda_handler", "run_on_environment_loop"]

P = ParamSpec("P")
Result = TypeVar("Result")

logger = logging.getLogger("polycache")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
# Held while the environment loop runs something: Lambda calls a handler from one thread.
_running = threading.Lock()


def _environment_loop() -> asyncio.AbstractEventLoop:
    """The event loop of this execution environment, created on first use."""
    global _loop, _loop_pid
    with _lock:
        # A forked child must not share its parent's loop (its selector is the parent's).
        if _loop is None or _loop.is_closed() or _loop_pid != os.getpid():
            if _loop_pid is None:
                atexit.register(_close_environment_loop)
            _loop = asyncio.new_event_loop()
            _loop_pid = os.getpid()
        return _loop


def _close_environment_loop() -> None:
    """At interpreter exit: close every loop-bound client on its own loop, then the loop."""
    loop = _loop
    if loop is None or loop.is_closed() or loop.is_running() or _loop_pid != os.getpid():
        return
    try:
        # Each loop-bound client's guard closes it (LoopBound); the AWS clients are shared.
        loop.run_until_complete(loop.shutdown_asyncgens())
        aws = sys.modules.get("polycache.loaders._aws")
        if aws is not None:
            loop.run_until_complete(aws.close_clients())
    except Exception as exc:  # best effort: the process is going away
        logger.debug("polycache: closing clients at exit failed: %r", exc)
    finally:
        loop.close()


def run_on_environment_loop(
    coroutine_function: Callable[P, Coroutine[Any, Any, Result]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> Result:
    """Run `coroutine_function(*args, **kwargs)` to completion on the environment's loop.

    The loop is the one every `lambda_handler` invocation and `cache.sync` call shares, so
    clients and background refreshes made in one call keep working in the next.

    Raises:
        ConfigurationError: Called from inside a running event loop (async code must `await`
            instead), or from a second thread while the loop is busy.
    """
    name = getattr(coroutine_function, "__qualname__", repr(coroutine_function))
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        # Checked before the coroutine is made: no "never awaited" warning follows the error.
        raise ConfigurationError(
            f"{name} runs polycache's per-environment event loop and was called from inside a "
            "running event loop; in async code (an async test, say) await the async function "
            "itself: `await handler.__wrapped__(event, context)`"
        )
    if not _running.acquire(blocking=False):
        raise ConfigurationError(
            f"{name} was called from a second thread while the execution environment's event "
            "loop is busy in another; Lambda calls a handler from one thread at a time"
        )
    try:
        loop = _environment_loop()
        if loop.is_running():
            raise ConfigurationError(
                f"{name} was called from a second thread while the execution environment's "
                "event loop runs in another; from a worker thread of async code use "
                "asyncio.run_coroutine_threadsafe(...)"
            )
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coroutine_function(*args, **kwargs))
    finally:
        _running.release()


@overload
def lambda_handler(handler: Callable[P, Coroutine[Any, Any, Result]], /) -> Callable[P, Result]: ...


@overload
def lambda_handler(
    *,
    cache: Cache | None = None,
    prefetch: Iterable[str] = (),
    prefetch_jitter: float = 0.0,
    metrics: bool | EmfMetrics = False,
) -> Callable[[Callable[P, Coroutine[Any, Any, Result]]], Callable[P, Result]]: ...


def lambda_handler(
    handler: Callable[P, Coroutine[Any, Any, Result]] | None = None,
    /,
    *,
    cache: Cache | None = None,
    prefetch: Iterable[str] = (),
    prefetch_jitter: float = 0.0,
    metrics: bool | EmfMetrics = False,
) -> Any:
    """Turn `async def handler(event, context)` into the sync function Lambda calls.

    Every invocation runs on the same event loop, kept for the life of the execution
    environment, unlike `asyncio.run()` per invocation, which makes a new loop each time.
    Clients, locks and background refreshes made in one invocation therefore keep working in
    the next: a refresh still running when an invocation returns carries on when the next one
    starts (Lambda freezes the process in between).

    Use it bare (`@polycache.lambda_handler`) or with arguments. With `cache` and `prefetch`,
    the keys are loaded when the decorator runs, which is at import, during Lambda's INIT
    phase, on the loop the invocations will use: invocation 1 is a hit. A key that fails to
    load is logged and loaded on first use; prefetch never fails the init.

    To test a decorated handler from async code, await the original:
    `await handler.__wrapped__(event, context)`.

    Args:
        handler: The `async def` handler (when used bare).
        cache: The cache to warm with `prefetch`.
        prefetch: Keys to load at init, batched per source.
        prefetch_jitter: Up to this many seconds of random delay before the prefetch, so that
            a fleet of environments started together does not call the source at once.
        metrics: Write the cache's metrics to stdout in CloudWatch's embedded metric format
            after each invocation in which it did anything: `True` for the defaults, or a
            `polycache.EmfMetrics` for another namespace, dimensions or interval. Needs `cache`.

    Example:
        ```python
        cache = polycache.Cache.from_env()

        @polycache.lambda_handler(cache=cache, prefetch=["ssm:/prod/db/url"])
        async def handler(event, context):
            return {"url": await cache.get("ssm:/prod/db/url")}
        ```

    Raises:
        ConfigurationError: `handler` is not an `async def` function, `prefetch` or `metrics`
            is given without a `cache`, or `metrics` is neither a bool nor an `EmfMetrics`.
            Calling the wrapped handler from inside a running event loop, or from a second
            thread while it runs, raises `ConfigurationError` too.
    """
    keys = _prefetch_keys(cache, prefetch)
    emf = _metrics(cache, metrics)

    def decorate(handler: Callable[P, Coroutine[Any, Any, Result]]) -> Callable[P, Result]:
        if not inspect.iscoroutinefunction(handler):
            raise ConfigurationError(
                f"lambda_handler wraps an async def handler(event, context), got {handler!r}"
            )
        if cache is not None and keys:
            run_on_environment_loop(cache.prefetch, keys, jitter=prefetch_jitter)

        @functools.wraps(handler)
        def run(*args: P.args, **kwargs: P.kwargs) -> Result:
            # Extra arguments pass through, for decorators stacked above (polycache.inject).
            try:
                return run_on_environment_loop(handler, *args, **kwargs)
            finally:
                if cache is not None:
                    cache.report()
                    if emf is not None:
                        emf.invocation_ended()

        return run

    if handler is not None:
        return decorate(handler)
    return decorate


def _metrics(cache: Cache | None, metrics: bool | EmfMetrics) -> EmfMetrics | None:
    if metrics is False:
        return None
    if metrics is True:
        metrics = EmfMetrics()
    elif not isinstance(metrics, EmfMetrics):
        raise ConfigurationError(
            f"lambda_handler's metrics takes True or a polycache.EmfMetrics, got {metrics!r}"
        )
    if cache is None:
        raise ConfigurationError("lambda_handler(metrics=...) needs the cache to report: cache=")
    cache.add_observer(metrics)
    return metrics


def _prefetch_keys(cache: Cache | None, prefetch: Iterable[str]) -> list[str]:
    if isinstance(prefetch, str | bytes):
        raise ConfigurationError(
            f"lambda_handler's prefetch takes a list of keys, got the str {prefetch!r}"
        )
    keys = list(prefetch)
    if keys and cache is None:
        raise ConfigurationError("lambda_handler(prefetch=...) needs the cache to warm: cache=")
    if cache is not None and not callable(getattr(cache, "prefetch", None)):
        raise ConfigurationError(f"lambda_handler's cache must be a polycache.Cache, got {cache!r}")
    return keys
