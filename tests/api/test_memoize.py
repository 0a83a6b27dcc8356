"""@cache.cached: keys from arguments, get_or_load's semantics, methods, refusals."""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polycache import Backend, Cache, ConfigurationError, LoaderError, SourceNotFound
from polycache._memoize import _encode
from polycache.backends.memory import MemoryBackend
from tests.conftest import FakeClock
from tests.core.fakes import BytesBackend

ROOT = Path(__file__).resolve().parents[2]


class Source:
    """An async source that counts its calls and can fail or say not found."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.error: Exception | None = None
        self.delay = 0.0

    async def fetch(self, *args: Any) -> str:
        self.calls.append(args)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return f"{args}#{len(self.calls)}"


# -- keys -------------------------------------------------------------------------------------


async def test_the_default_key_is_module_qualname_and_the_arguments_as_json() -> None:
    cache = Cache()

    @cache.cached()
    async def lookup(user_id: int, lang: str = "en", *, full: bool = False) -> str:
        return f"{user_id}-{lang}-{full}"

    prefix = f"{__name__}.test_the_default_key_is_module_qualname_and_the_arguments_as_json."
    assert lookup.key(42) == f'{prefix}<locals>.lookup:[42,"en",false]'
    # Defaults applied, keywords and positions alike: one call, one key.
    assert lookup.key(42) == lookup.key(42, "en") == lookup.key(user_id=42, full=False)
    assert lookup.key(42, lang="fr") == f'{prefix}<locals>.lookup:[42,"fr",false]'
    assert await lookup(42) == "42-en-False"
    assert await cache.get(lookup.key(42)) == "42-en-False"


async def test_default_keys_encode_nested_values_canonically() -> None:
    cache = Cache()

    @cache.cached()
    async def search(query: Any, *tags: str, **filters: Any) -> str:
        return "found"

    key = search.key({"b": [1, 2.5], "a": None}, "x", "y", since=3, active=True)
    assert key.endswith(':[{"a":null,"b":[1,2.5]},["x","y"],{"active":true,"since":3}]')
    # Keyword order does not matter; dict keys are sorted.
    assert key == search.key({"a": None, "b": [1, 2.5]}, "x", "y", active=True, since=3)
    # Values that compare equal in Python but differ in type do not share a key.
    assert len({search.key(1), search.key(1.0), search.key(True), search.key("1")}) == 4
    assert search.key('é\n"').endswith(':["é\\n\\"",[],{}]')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_the_encoding_is_compact_sorted_json(value: Any) -> None:
    assert _encode(value) == json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def test_default_keys_are_the_same_in_every_process() -> None:
    script = (
        "from polycache import Cache\n"
        "cache = Cache()\n"
        "@cache.cached()\n"
        "async def profile(name, options):\n"
        "    return name\n"
        "print(profile.key('ada', {'z': (1, 'a'), 'b': {'c': 2.5}}))\n"
    )
    keys = set()
    for seed in ("1", "2", "random"):
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        keys.add(result.stdout.strip())
    assert keys == {'__main__.profile:["ada",{"b":{"c":2.5},"z":[1,"a"]}]'}


@pytest.mark.parametrize(
    ("argument", "named"),
    [
        (object(), "object"),
        ({1, 2}, "set"),
        (b"raw", "bytes"),
        ({1: "non-str key"}, "int"),
        ([1, object()], "object"),
    ],
)
def test_an_unencodable_argument_is_refused_at_the_call(argument: Any, named: str) -> None:
    cache = Cache()
    source = Source()

    @cache.cached()
    async def lookup(user_id: int, extra: Any = None) -> str:
        return await source.fetch(user_id, extra)

    # Raised by the call itself, before anything is awaited: never a silent miss.
    with pytest.raises(ConfigurationError, match=rf"argument 'extra' holds a {named}") as caught:
        lookup(1, argument)
    assert "key='...{extra}...'" in str(caught.value)
    with pytest.raises(ConfigurationError, match="argument 'extra'"):
        lookup.key(1, extra=argument)
    assert source.calls == []


def test_arguments_json_cannot_encode_are_refused_too() -> None:
    cache = Cache()

    @cache.cached()
    async def lookup(value: Any) -> Any:
        return value

    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ConfigurationError, match="RecursionError"):
        lookup(looped)
    with pytest.raises(ConfigurationError, match="ValueError"):
        lookup(10**5000)


async def test_a_partial_needs_a_template() -> None:
    cache = Cache()

    async def lookup(region: str, user_id: int) -> str:
        return f"{region}/{user_id}"

    with pytest.raises(ConfigurationError, match="pass key="):
        cache.cached()(functools.partial(lookup, "eu"))
    memoized = cache.cached(key="eu:{user_id}")(functools.partial(lookup, "eu"))
    assert memoized.key(7) == "eu:7"
    assert await memoized(7) == "eu/7"


def test_a_call_that_does_not_fit_the_signature_is_a_type_error_naming_the_function() -> None:
    cache = Cache()

    @cache.cached()
    async def lookup(user_id: int) -> int:
        return user_id

    with pytest.raises(TypeError, match=r"lookup\(\): missing a required argument: 'user_id'"):
        lookup.key()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        lookup(1, nope=2)  # type: ignore[call-arg]


async def test_a_key_template_is_formatted_with_the_arguments_by_name() -> None:
    cache = Cache()
    source = Source()

    @cache.cached(key="user:{user_id}:{lang}:{scores[0]:03d}")
    async def lookup(user_id: int, scores: list[int], lang: str = "en") -> str:
        return await source.fetch(user_id, lang)

    assert lookup.key(42, [7]) == "user:42:en:007"
    assert lookup.key(scores=[7], lang="fr", user_id=1) == "user:1:fr:007"
    assert await lookup(42, [7]) == await lookup(user_id=42, scores=[7, 8])
    assert source.calls == [(42, "en")]
    assert await cache.get("user:42:en:007") == "(42, 'en')#1"


def test_a_one_field_template_formats_alike_however_the_call_passes_it() -> None:
    cache = Cache()

    class Tier(enum.Enum):
        GOLD = "gold"

    @cache.cached(key="user:{user_id}!")
    async def lookup(user_id: object, lang: str = "en") -> object:
        return user_id

    for value in (42, "ada", 2.5, Tier.GOLD, None, (1, "a")):
        assert lookup.key(value) == lookup.key(user_id=value) == f"user:{value}!"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("user:{uid}", r"names \{uid\}, but .*lookup\(\) has no parameter 'uid'"),
        ("user:{}", "has no parameter ''"),
        ("user:{0}", "has no parameter '0'"),
        ("user:{user_id", "is malformed"),
        ("user:{user_id:{width}}", "nested fields"),
        ("", "non-empty template"),
    ],
)
def test_a_bad_template_is_refused_at_decoration(template: str, message: str) -> None:
    cache = Cache()
    with pytest.raises(ConfigurationError, match=message):

        @cache.cached(key=template)
        async def lookup(user_id: int) -> int:
            return user_id


def test_a_template_that_cannot_be_formatted_is_refused_at_the_call() -> None:
    cache = Cache()

    @cache.cached(key="user:{user.id}")
    async def lookup(user: object) -> object:
        return user

    with pytest.raises(ConfigurationError, match=r"'user:\{user.id\}' cannot be formatted"):
        lookup(object())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ttl": -1}, "ttl must be a finite, non-negative"),
        ({"stale_ttl": "soon"}, "stale_ttl must be a number of seconds"),
        ({"key": 42}, "key must be a non-empty template str"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Cache().cached(**options)


# -- semantics: those of get_or_load ----------------------------------------------------------


async def test_a_call_loads_once_and_then_hits() -> None:
    cache = Cache()
    source = Source()

    @cache.cached()
    async def lookup(user_id: int) -> str:
        return await source.fetch(user_id)

    assert await lookup(1) == "(1,)#1"
    assert await lookup(1) == "(1,)#1"
    assert await lookup(2) == "(2,)#2"
    assert source.calls == [(1,), (2,)]
    assert cache.stats.hits == 1
    assert cache.stats.loads == 2


async def test_concurrent_calls_share_one_load() -> None:
    cache = Cache()
    source = Source()
    source.delay = 0.01

    @cache.cached()
    async def lookup(user_id: int) -> str:
        return await source.fetch(user_id)

    results = await asyncio.gather(*(lookup(7) for _ in range(20)))
    assert set(results) == {"(7,)#1"}
    assert source.calls == [(7,)]


async def test_the_decorators_durations_apply_with_stale_while_revalidate(
    clock: FakeClock,
) -> None:
    cache = Cache(ttl=300, clock=clock)
    source = Source()

    @cache.cached(ttl=10, stale_ttl=60)
    async def lookup(user_id: int) -> str:
        return await source.fetch(user_id)

    assert await lookup(1) == "(1,)#1"
    clock.advance(11)  # stale: served at once, one refresh in the background
    assert await lookup(1) == "(1,)#1"
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert await lookup(1) == "(1,)#2"
    clock.advance(75)  # past ttl + stale_ttl: expired, the caller waits for a load
    assert await lookup(1) == "(1,)#3"
    assert len(source.calls) == 3


async def test_a_failing_function_is_a_loader_error_unless_a_stale_value_may_stand_in(
    clock: FakeClock,
) -> None:
    cache = Cache(ttl=10, stale_if_error=60, clock=clock)
    source = Source()

    @cache.cached()
    async def lookup(user_id: int) -> str:
        return await source.fetch(user_id)

    @cache.cached()
    async def never(user_id: int) -> str:
        return await source.fetch(user_id)

    assert await lookup(1) == "(1,)#1"
    source.error = RuntimeError("source is down")
    clock.advance(20)
    assert await lookup(1) == "(1,)#1"  # stale-if-error
    with pytest.raises(LoaderError) as caught:
        await never(1)
    assert isinstance(caught.value.__cause__, RuntimeError)


async def test_source_not_found_propagates_and_is_remembered(clock: FakeClock) -> None:
    cache = Cache(negative_ttl=30, clock=clock)
    source = Source()
    source.error = SourceNotFound("no such user")

    @cache.cached(key="user:{user_id}")
    async def lookup(user_id: int) -> str:
        return await source.fetch(user_id)

    for _ in range(3):
        with pytest.raises(SourceNotFound):
            await lookup(404)
    assert source.calls == [(404,)]
    clock.advance(31)
    with pytest.raises(SourceNotFound):
        await lookup(404)
    assert len(source.calls) == 2


async def test_invalidate_refresh_and_key(clock: FakeClock) -> None:
    cache = Cache(ttl=300, clock=clock)
    source = Source()

    @cache.cached(ttl=10, key="user:{user_id}")
    async def lookup(user_id: int) -> str:
        return await source.fetch(user_id)

    assert lookup.key(1) == "user:1"
    assert await lookup(1) == "(1,)#1"
    await lookup.invalidate(1)
    assert await cache.get("user:1") is None
    assert await lookup(1) == "(1,)#2"
    assert await lookup.refresh(1) == "(1,)#3"
    assert await lookup(1) == "(1,)#3"
    # The refreshed entry has the decorator's ttl, not the cache's.
    clock.advance(11)
    assert await lookup(1) == "(1,)#4"
    source.error = SourceNotFound("gone")
    with pytest.raises(SourceNotFound):
        await lookup.refresh(1)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("extension", marks=pytest.mark.extension),
        pytest.param("momento", marks=pytest.mark.momento),
    ]
)
def any_backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return MemoryBackend()
    backend: Backend = request.getfixturevalue(f"{request.param}_backend")
    return backend


async def test_memoized_values_round_trip_through_every_backend(any_backend: Backend) -> None:
    backend = any_backend
    cache = Cache(backend)
    source = Source()

    @cache.cached(ttl=60)
    async def profile(user_id: int, fields: Sequence[str] = ("name",)) -> dict[str, Any]:
        await source.fetch(user_id)
        return {"id": user_id, "fields": list(fields)}

    first = await profile(5, ("name", "email"))
    assert await profile(5, ["name", "email"]) == first == {"id": 5, "fields": ["name", "email"]}
    assert len(source.calls) == 1
    await profile.invalidate(5, ("name", "email"))
    assert await cache.get(profile.key(5, ("name", "email"))) is None
    await cache.aclose()


async def test_values_are_shared_by_two_caches_on_one_remote_backend() -> None:
    backend = BytesBackend()
    source = Source()

    def define(cache: Cache) -> Any:
        @cache.cached()
        async def lookup(user_id: int) -> str:
            return await source.fetch(user_id)

        return lookup

    first, second = define(Cache(backend)), define(Cache(backend))
    assert first.key(3) == second.key(3)
    assert await first(3) == await second(3) == "(3,)#1"


# -- methods ----------------------------------------------------------------------------------

cache_for_methods = Cache()


class Users:
    def __init__(self, tenant: str, source: Source) -> None:
        self.tenant = tenant
        self.source = source

    @cache_for_methods.cached()
    async def by_id(self, user_id: int) -> str:
        """Look a user up."""
        return f"{self.tenant}:" + await self.source.fetch(user_id)

    @cache_for_methods.cached(key="{self.tenant}:user:{user_id}")
    async def by_tenant(self, user_id: int) -> str:
        return f"{self.tenant}:" + await self.source.fetch(user_id)

    @classmethod
    @cache_for_methods.cached()
    async def count(cls, kind: str) -> int:
        return len(kind)


async def test_self_is_not_part_of_the_default_key() -> None:
    source = Source()
    acme, globex = Users("acme", source), Users("globex", source)
    assert acme.by_id.key(1) == globex.by_id.key(1) == f"{__name__}.Users.by_id:[1]"
    assert Users.by_id.key(acme, 1) == acme.by_id.key(1)
    first = await acme.by_id(1)
    assert await globex.by_id(1) == first
    assert source.calls == [(1,)]


async def test_a_template_may_name_self() -> None:
    source = Source()
    acme, globex = Users("acme", source), Users("globex", source)
    assert acme.by_tenant.key(1) == "acme:user:1"
    assert await acme.by_tenant(1) == "acme:(1,)#1"
    assert await globex.by_tenant(1) == "globex:(1,)#2"
    assert await acme.by_tenant(1) == "acme:(1,)#1"


async def test_bound_methods_carry_invalidate_refresh_and_the_functions_metadata() -> None:
    source = Source()
    acme = Users("acme", source)
    assert await acme.by_tenant(2) == "acme:(2,)#1"
    await acme.by_tenant.invalidate(2)
    assert await acme.by_tenant(2) == "acme:(2,)#2"
    assert await acme.by_tenant.refresh(2) == "acme:(2,)#3"
    assert await acme.by_tenant(2) == "acme:(2,)#3"
    assert acme.by_id.__name__ == "by_id"
    assert acme.by_id.__doc__ == "Look a user up."
    assert "bound cached Users.by_id" in repr(acme.by_id)


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="classmethod no longer wraps descriptors")
async def test_class_methods_leave_cls_out_of_the_default_key() -> None:
    # mypy does not follow classmethod through a descriptor: checked at run time only.
    count: Any = Users.count
    assert count.key("abc") == f'{__name__}.Users.count:["abc"]'
    assert await count("abc") == 3


# -- decoration -------------------------------------------------------------------------------


def test_sync_functions_and_async_generators_are_refused_at_decoration() -> None:
    cache = Cache()

    def sync(user_id: int) -> int:
        return user_id

    async def generate(user_id: int) -> Any:
        yield user_id

    with pytest.raises(ConfigurationError, match=r"memoizes async def functions; .*sync"):
        cache.cached()(sync)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="is an async generator"):
        cache.cached()(generate)


def test_the_memoized_function_keeps_its_name_doc_and_signature() -> None:
    cache = Cache()

    async def lookup(user_id: int, lang: str = "en") -> str:
        """Find a user."""
        return lang

    memoized = cache.cached()(lookup)
    assert memoized.__name__ == "lookup"
    assert memoized.__doc__ == "Find a user."
    assert memoized.__wrapped__ is lookup
    assert inspect.signature(memoized) == inspect.signature(lookup)
    assert "cached" in repr(memoized)
    assert "lookup" in repr(memoized)
