"""`inject`: resolve cached values before a Lambda handler runs, as lambda-cache's decorators do."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Concatenate, Literal, Protocol, TypeVar, cast

from polycache._errors import ConfigurationError

if TYPE_CHECKING:
    from polycache._cache import Cache

__all__ = ["inject"]

EventT = TypeVar("EventT")
ContextT = TypeVar("ContextT")
ResultT = TypeVar("ResultT")


class Injector(Protocol):
    """What `inject(...)` returns: a decorator that takes the injected parameters away.

    A handler `(event, context, *, url, creds)` becomes `(event, context)`, which is how
    Lambda (and a type checker) sees it; the result type, awaitable or not, is kept.
    """

    def __call__(
        self, handler: Callable[Concatenate[EventT, ContextT, ...], ResultT], /
    ) -> Callable[[EventT, ContextT], ResultT]: ...


def _default_name(key: str) -> str:
    """The last path segment of a key's name, as an identifier: `ssm:/prod/db/url:3` -> `url`."""
    name = key.partition(":")[2] if ":" in key else key
    name = name.removeprefix("//").split("?", 1)[0].split("#", 1)[0]
    segments = [segment for segment in name.split("/") if segment]
    segment = segments[-1] if segments else name
    if not key.startswith("secretsmanager:"):
        # An SSM version or label selector is not part of the name.
        segment = segment.split(":", 1)[0]
    identifier = "".join(
        character if character.isalnum() or character == "_" else "_" for character in segment
    )
    if not identifier or identifier[0].isdigit():
        identifier = f"_{identifier}"
    return identifier


def _names(keys: tuple[str, ...], named_keys: Mapping[str, str]) -> dict[str, str]:
    """Map each injected name to its key, rejecting clashes."""
    names: dict[str, str] = {}
    for name, key in [*((_default_name(key), key) for key in keys), *named_keys.items()]:
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"inject takes cache keys as non-empty str, got {key!r}")
        if name in names:
            raise ConfigurationError(
                f"inject: {key!r} and {names[name]!r} would both be named {name!r}; "
                f"give one a name of its own ({name}_2={key!r})"
            )
        names[name] = key
    return names


def _check_accepts(handler: Callable[..., Any], names: Mapping[str, str]) -> None:
    try:
        # Not followed through functools.wraps: the wrapper is what will be called.
        parameters = inspect.signature(handler, follow_wrapped=False).parameters.values()
    except (TypeError, ValueError):
        return  # a builtin or a C callable: nothing to check
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return
    accepted = {
        parameter.name
        for parameter in parameters
        if parameter.kind
        in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    missing = sorted(set(names) - accepted)
    if missing:
        raise ConfigurationError(
            f"inject passes {missing} as keyword arguments, but {handler!r} does not accept "
            f"them: add them to its parameters, or use into='context'"
        )


def inject(
    cache: Cache,
    *keys: str,
    into: Literal["kwargs", "context"] = "kwargs",
    **named_keys: str,
) -> Injector:
    """Resolve cache keys before a Lambda handler runs and hand the values to it.

    The keys are read with one `cache.get_many` (batched per source) on every invocation:
    cached values cost nothing, and misses, stale entries and errors follow the cache's rules.
    A name the source does not have arrives as None; a failed load raises before the handler
    runs. Works on `def` and `async def` handlers, under or over `polycache.lambda_handler`.

    Args:
        cache: The cache to read from.
        *keys: Keys whose value is named after the key's last path segment
            (`ssm:/prod/db/url` -> `url`, `s3://bucket/conf/app.json` -> `app_json`).
        into: `"kwargs"` to pass the values as keyword arguments (a keyword the caller passes
            itself wins), or `"context"` to set them as attributes of the Lambda context
            (lambda-cache's way: `context.url`).
        **named_keys: Keys under a name of your choosing: `db_url="ssm:/prod/db/url"`.

    Example:
        ```python
        @polycache.lambda_handler
        @polycache.inject(cache, "ssm:/prod/db/url", creds="secretsmanager:prod/db")
        async def handler(event, context, url, creds):
            ...
        ```

    Raises:
        ConfigurationError: No keys, a key that is not a str, two keys with one name, an
            unknown `into`, or (with `into="kwargs"`) a handler that does not accept the names.
    """
    if into not in ("kwargs", "context"):
        raise ConfigurationError(f"inject's into must be 'kwargs' or 'context', got {into!r}")
    if not callable(getattr(cache, "get_many", None)):
        raise ConfigurationError(f"inject needs a polycache.Cache first, got {cache!r}")
    if not keys and not named_keys:
        raise ConfigurationError("inject needs at least one cache key")
    names = _names(keys, named_keys)

    async def resolve() -> dict[str, Any]:
        values = await cache.get_many(names.values())
        return {name: values.get(key) for name, key in names.items()}

    def deliver(values: dict[str, Any], context: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if into == "kwargs":
            return {**values, **kwargs}
        try:
            for name, value in values.items():
                setattr(context, name, value)
        except (AttributeError, TypeError) as exc:
            raise ConfigurationError(
                f"inject(into='context') needs a Lambda context that takes attributes, "
                f"got {type(context).__name__}"
            ) from exc
        return kwargs

    def decorate(handler: Callable[..., Any], /) -> Any:
        if not callable(handler):
            raise ConfigurationError(f"inject decorates a handler function, got {handler!r}")
        if into == "kwargs":
            _check_accepts(handler, names)

        if inspect.iscoroutinefunction(handler):
            asynchronous = cast(Callable[..., Awaitable[Any]], handler)

            @functools.wraps(handler)
            async def run_async(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
                values = await resolve()
                return await asynchronous(event, context, *args, **deliver(values, context, kwargs))

            return run_async

        @functools.wraps(handler)
        def run(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            values = _run_sync(resolve)
            return handler(event, context, *args, **deliver(values, context, kwargs))

        return run

    return cast(Injector, decorate)


def _run_sync(resolve: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    """Run `resolve` on the execution environment's loop, the one `lambda_handler` uses."""
    from polycache._lambda import run_on_environment_loop

    return run_on_environment_loop(resolve)
