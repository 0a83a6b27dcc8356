"""The memoized function keeps its signature for type checkers (mypy checks this file).

Each `# type: ignore[...]` below marks a call mypy must reject; mypy --strict reports an
ignore that is not needed, so if the signature were lost (to `...` or `Any`), mypy would fail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, assert_type

from polycache import Cache
from polycache._memoize import Cached

cache = Cache()


@cache.cached(ttl=60, key="user:{user_id}")
async def get_user(user_id: int, lang: str = "en") -> dict[str, int]:
    return {"id": user_id}


class Repository:
    @cache.cached()
    async def count(self, kind: str, *, exact: bool = False) -> int:
        return len(kind)


async def test_calls_keep_their_parameter_and_return_types() -> None:
    assert_type(await get_user(1), dict[str, int])
    assert_type(await get_user(1, "fr"), dict[str, int])
    assert_type(await get_user(user_id=1, lang="fr"), dict[str, int])
    assert_type(get_user.key(1), str)
    assert_type(await get_user.refresh(1), dict[str, int])
    assert_type(await get_user.invalidate(1), None)
    as_callable: Callable[[int, str], Awaitable[dict[str, int]]] = get_user
    assert await as_callable(2, "en") == {"id": 2}

    if TYPE_CHECKING:  # checked by mypy, never run
        get_user("1")  # type: ignore[arg-type]
        get_user(1, lang=2)  # type: ignore[arg-type]
        get_user.key(1, "en", "extra")  # type: ignore[call-arg]
        get_user.invalidate()  # type: ignore[call-arg]
        _wrong_return: Callable[[int], Awaitable[str]] = get_user  # type: ignore[assignment]


async def test_methods_are_typed_without_self() -> None:
    repository = Repository()
    assert_type(await repository.count("abc"), int)
    assert_type(await repository.count("abc", exact=True), int)
    assert_type(repository.count.key("abc"), str)
    assert_type(Repository.count.key(repository, "abc"), str)
    bound: Cached[[str], int] = repository.count
    assert bound.key("abc") == repository.count.key("abc")

    if TYPE_CHECKING:
        repository.count(3)  # type: ignore[arg-type]
        repository.count.refresh("abc", True)  # type: ignore[call-arg]
