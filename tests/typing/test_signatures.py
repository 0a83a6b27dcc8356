"""What a type checker sees of polycache's decorators (checked by mypy --strict over tests/).

Each `assert_type` fails the mypy step of the test command if a signature regresses; the test
functions also run, so the decorated handlers are exercised as Lambda calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, assert_type

import polycache
from polycache import Cache


def test_inject_takes_the_injected_parameters_out_of_the_signature() -> None:
    cache = Cache(ttl=60)

    async def handler(event: dict[str, Any], context: object, *, url: str | None) -> str:
        return f"{event['n']}:{url}"

    injected = polycache.inject(cache, url="plain-url")(handler)
    assert_type(injected, Callable[[dict[str, Any], object], Coroutine[Any, Any, str]])
    entry_point = polycache.lambda_handler(injected)
    assert_type(entry_point, Callable[[dict[str, Any], object], str])
    assert entry_point({"n": 1}, None) == "1:None"  # Lambda's call: event and context only


def test_lambda_handler_keeps_the_handler_signature_both_ways() -> None:
    cache = Cache(ttl=60)

    @polycache.lambda_handler
    async def bare(event: dict[str, int], context: object) -> int:
        return event["n"]

    @polycache.lambda_handler(cache=cache)
    async def configured(event: dict[str, int], context: object) -> int:
        return event["n"] + 1

    as_lambda_calls_it: Callable[[dict[str, int], object], int] = bare
    assert as_lambda_calls_it({"n": 1}, None) == 1
    assert configured({"n": 1}, None) == 2


def _misuses_a_type_checker_catches() -> None:
    # Never run: each line is a type error, and mypy's warn_unused_ignores fails the test
    # command if a signature regresses so far that one of them is no longer an error.
    cache = Cache()

    async def handler(event: dict[str, Any], context: object, *, url: str | None) -> str:
        return ""

    injected = polycache.inject(cache, url="plain-url")(handler)
    _ = injected({}, None, url="x")  # type: ignore[call-arg]

    @polycache.lambda_handler
    async def bare(event: dict[str, int], context: object) -> int:
        return 0

    bare("not a dict", None)  # type: ignore[arg-type]
