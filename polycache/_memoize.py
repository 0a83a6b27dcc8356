"""`Cache.cached`: memoized async functions, on top of `Cache.get_or_load`.

A call's arguments make its cache key, through a template the user writes or a default that
encodes the arguments canonically (the same key in every process, so a shared backend serves
every instance of a function). Everything else (single-flight, stale-while-revalidate,
stale-if-error, negative caching) is `get_or_load`'s.
"""

from __future__ import annotations

import functools
import inspect
import json.encoder
import math
import string
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Concatenate, Final, Generic, ParamSpec, TypeVar, overload

from polycache._config import Duration, duration
from polycache._errors import ConfigurationError
from polycache._tags import Tags, check_tags

if TYPE_CHECKING:
    from typing import Self

    from polycache._cache import Cache

__all__ = ["Cached", "Memoizer"]

P = ParamSpec("P")
Q = ParamSpec("Q")
R = TypeVar("R")
Instance = TypeVar("Instance")

KeyFunction = Callable[[tuple[Any, ...], dict[str, Any]], str]

_encode_str: Final[Callable[[str], str]] = json.encoder.encode_basestring
_int_repr: Final = int.__repr__
_float_repr: Final = float.__repr__
_partial: Final = functools.partial

# Parameter names that make a function a method: its first argument is not part of the
# default key (an object has no encoding that is the same in every process; a template can name
# what identifies it, "{self.tenant}").
_RECEIVER_NAMES: Final = frozenset({"self", "cls"})

_POSITIONAL: Final = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class _Unencodable(Exception):  # noqa: N818 - internal signal, never escapes this module
    def __init__(self, value: object) -> None:
        self.value = value


def _encode(value: object) -> str:
    """Compact JSON with sorted keys: what `json.dumps(sort_keys=True)` writes, for JSON types.

    Only exact types: a subclass (an IntEnum, a str subclass) may format itself differently
    across versions, and two values that JSON cannot tell apart (a tuple and a list excepted)
    must not share a key, so dict keys must be str.
    """
    kind = type(value)
    if kind is str:
        return _encode_str(value)  # type: ignore[arg-type]
    if kind is int:
        return _int_repr(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is float:
        number: float = value  # type: ignore[assignment]
        if math.isfinite(number):
            return _float_repr(number)
        return "NaN" if number != number else ("Infinity" if number > 0 else "-Infinity")
    if kind is tuple or kind is list:
        return "[" + ",".join([_encode(item) for item in value]) + "]"  # type: ignore[attr-defined]
    if kind is dict:
        items: dict[Any, Any] = value  # type: ignore[assignment]
        for name in items:
            if type(name) is not str:
                raise _Unencodable(name)
        return (
            "{"
            + ",".join([_encode_str(name) + ":" + _encode(items[name]) for name in sorted(items)])
            + "}"
        )
    raise _Unencodable(value)


class _Signature:
    """A function's parameters, and how to bind a call's arguments fast."""

    __slots__ = ("exact", "name", "names", "signature", "tails")

    def __init__(self, function: Callable[..., Any], name: str) -> None:
        self.name = name
        self.signature = inspect.signature(function)
        parameters = list(self.signature.parameters.values())
        self.names = tuple(parameter.name for parameter in parameters)
        self.tails = self._tails(parameters)
        # The number of arguments a call passing every parameter positionally has, if there is
        # such a call (no *args, no keyword-only parameter); -1 otherwise.
        self.exact = (
            len(parameters)
            if all(parameter.kind in _POSITIONAL for parameter in parameters)
            else -1
        )

    @staticmethod
    def _tails(parameters: list[inspect.Parameter]) -> tuple[tuple[Any, ...] | None, ...]:
        """For a call of n positional arguments and no keywords, what binding adds after them.

        `tails[n]` is the bound values of the parameters after the first n (their defaults, an
        empty tuple for `*args`, an empty dict for `**kwargs`), or None where such a call must
        be bound the slow way (a required parameter left out: `bind` names it).
        """
        positional = [parameter for parameter in parameters if parameter.kind in _POSITIONAL]
        rest: list[Any] = []
        for parameter in parameters[len(positional) :]:
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                rest.append(())
            elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
                rest.append({})
            elif parameter.default is inspect.Parameter.empty:
                return (None,) * (len(positional) + 1)
            else:
                rest.append(parameter.default)
        tails: list[tuple[Any, ...] | None] = []
        for count in range(len(positional) + 1):
            left_out = positional[count:]
            if any(parameter.default is inspect.Parameter.empty for parameter in left_out):
                tails.append(None)
            else:
                tails.append(tuple(parameter.default for parameter in left_out) + tuple(rest))
        return tuple(tails)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The value of every parameter, in order, defaults applied."""
        if not kwargs:
            tails = self.tails
            if len(args) < len(tails):
                tail = tails[len(args)]
                if tail is not None:
                    return args + tail if tail else args
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        bound.apply_defaults()
        return tuple(bound.arguments.values())


def _default_key(
    function: Callable[..., Any], signature: _Signature, skip: int
) -> tuple[KeyFunction, str | None]:
    """The default key function, and the head of its key for a call of one str argument.

    The head (`"module.qualname:["`) is given when a call passing one argument positionally
    is keyed `head + the argument as JSON + "]"`: `Cached.__call__` then writes the key itself.
    """
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not module or not qualname:
        raise ConfigurationError(
            f"cache.cached: {function!r} has no module and qualified name to make its default "
            "key from (a functools.partial?); pass key='...' naming its parameters"
        )
    prefix = f"{module}.{qualname}:"
    bind = signature.bind
    # A call passing every parameter positionally needs no binding at all.
    exact = signature.exact

    head = prefix + "["
    # The index of the one argument in the key, for the commonest call: one argument
    # (after self), passed positionally.
    single = skip if exact == skip + 1 else -1
    single_count = exact if single >= 0 else -1
    encode_str = _encode_str

    def key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if len(args) == single_count and not kwargs:
            value = args[single]
            kind = type(value)
            # f-strings: one allocation, where each + is one.
            if kind is str:
                return f"{head}{encode_str(value)}]"
            if kind is int:
                # Not contextlib.suppress: that is an object per call, on the hit path.
                try:
                    return f"{head}{_int_repr(value)}]"
                except ValueError:
                    pass  # too long for str(): named by the general path below
        values = args if not kwargs and len(args) == exact else bind(args, kwargs)
        if skip:
            values = values[1:]
        # The common arguments (str, int) are encoded here, without a call to _encode each.
        parts = []
        try:
            for value in values:
                kind = type(value)
                if kind is str:
                    parts.append(_encode_str(value))
                elif kind is int:
                    parts.append(_int_repr(value))
                else:
                    parts.append(_encode(value))
        except _Unencodable as exc:
            raise _unencodable_error(signature, values, skip, exc.value) from None
        except (RecursionError, ValueError) as exc:  # a list inside itself, a 5000-digit int
            raise ConfigurationError(
                f"cannot make a cache key for {signature.name}(): {type(exc).__name__}: {exc}"
            ) from None
        return f"{head}{','.join(parts)}]"

    return key, head if single == 0 else None


def _unencodable_error(
    signature: _Signature, values: tuple[Any, ...], skip: int, culprit: object
) -> ConfigurationError:
    name = next(
        (
            name
            for name, value in zip(signature.names[skip:], values, strict=True)
            if not _encodable(value)
        ),
        "?",
    )
    return ConfigurationError(
        f"cannot make a cache key for {signature.name}(): argument {name!r} holds a "
        f"{type(culprit).__name__} ({culprit!r:.60}); the default key encodes str, int, float, "
        f"bool, None, and lists, tuples and str-keyed dicts of them. Name the key yourself, "
        f"e.g. key='...{{{name}}}...'"
    )


def _encodable(value: object) -> bool:
    try:
        _encode(value)
    except (_Unencodable, RecursionError, ValueError):
        return False
    return True


def _template_key(template: str, signature: _Signature) -> KeyFunction:
    """A key function formatting `template` with the bound arguments by parameter name."""
    # Rewritten once to positional fields ("user:{user_id}" -> "user:{0}"): str.format then
    # takes the bound values as they are, with no dict built per call.
    pieces: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigurationError(f"key template {template!r} is malformed: {exc}") from None
    for literal, field, spec, conversion in parsed:
        pieces.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        root = field
        for separator in ".[":
            root = root.partition(separator)[0]
        if root not in signature.names:
            raise ConfigurationError(
                f"key template {template!r} names {{{field}}}, but {signature.name}() has no "
                f"parameter {root!r} (its parameters: {', '.join(signature.names) or 'none'})"
            )
        if spec and "{" in spec:
            raise ConfigurationError(
                f"key template {template!r}: nested fields in a format spec are not supported"
            )
        index = str(signature.names.index(root))
        pieces.append(
            "{"
            + index
            + field[len(root) :]
            + (f"!{conversion}" if conversion else "")
            + (f":{spec}" if spec else "")
            + "}"
        )
    positional = "".join(pieces)
    bind = signature.bind
    exact = signature.exact
    # The commonest template, one bare field ("user:{user_id}"), for the commonest call (every
    # argument positional): an f-string, no str.format.
    fields = [item for item in parsed if item[1] is not None]
    bare = (
        len(fields) == 1
        and exact >= 0
        and fields[0][1] in signature.names  # a name alone: no attribute, no index
        and not fields[0][2]
        and not fields[0][3]
    )
    single = signature.names.index(fields[0][1]) if bare else -1
    before = fields[0][0] if bare else ""
    after = "".join(literal for literal, field, _, _ in parsed if field is None) if bare else ""

    def key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if single >= 0 and not kwargs and len(args) == exact:
            # What str.format does for a bare field: format(value, "").
            return f"{before}{args[single]}{after}"
        values = args if not kwargs and len(args) == exact else bind(args, kwargs)
        try:
            return positional.format(*values)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"key template {template!r} cannot be formatted with the arguments of "
                f"{signature.name}(): {type(exc).__name__}: {exc}"
            ) from None

    return key


class Cached(Generic[P, R]):
    """An async function memoized in a `Cache`; made by `@cache.cached(...)`.

    Calling it returns the cached value for its arguments, calling the function on a miss, with
    everything `Cache.get_or_load` does: one call per key however many callers wait,
    stale-while-revalidate, stale-if-error, negative caching of `SourceNotFound`.

    Example:
        ```python
        @cache.cached(ttl=60, key="user:{user_id}")
        async def get_user(user_id: int) -> dict: ...

        user = await get_user(42)  # loads once, then served from the cache for 60 s
        await get_user.invalidate(42)
        ```
    """

    # Copied from the function by functools.update_wrapper.
    __name__: str
    __qualname__: str
    __wrapped__: Callable[..., Awaitable[R]]

    def __init__(
        self,
        cache: Cache,
        function: Callable[P, Awaitable[R]],
        key: KeyFunction,
        ttl: float | None,
        stale_ttl: float | None,
        tags: Tags | None = None,
        head: str | None = None,
    ) -> None:
        functools.update_wrapper(self, function)
        self._cache = cache
        self._function = function
        self._key = key
        self._ttl = ttl
        self._stale_ttl = stale_ttl
        self._tags = tags
        self._get_or_load = cache.get_or_load
        self._head = head
        # Without options, get_or_load is called without keywords: matching them costs a hit
        # several percent.
        self._plain = ttl is None and stale_ttl is None and tags is None

    def __repr__(self) -> str:
        return f"<cached {self._function.__qualname__} in {self._cache!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """Return the cached value for these arguments; on a miss, call the function.

        Raises:
            ConfigurationError: The arguments cannot make a key (at the call, before awaiting).
            SourceNotFound: The function raised it, now or within `negative_ttl`.
            LoaderError: The function failed and no stale value could stand in.
        """
        head = self._head
        if head is not None and len(args) == 1 and not kwargs and type(args[0]) is str:
            # The commonest call, one str argument of a default-keyed function, keyed here as
            # its key function would key it: a call less, about a tenth of a hit.
            key = f"{head}{_encode_str(args[0])}]"
        else:
            key = self._key(args, kwargs)
        # Without keywords, no `**{}`: partial would copy the empty dict (a third of it).
        loader = (
            _partial(self._function, *args, **kwargs) if kwargs else _partial(self._function, *args)
        )
        awaitable: Awaitable[R]
        if self._plain:
            awaitable = self._get_or_load(key, loader)
        else:
            awaitable = self._get_or_load(
                key, loader, ttl=self._ttl, stale_ttl=self._stale_ttl, tags=self._tags
            )
        return awaitable

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key a call with these arguments reads and writes."""
        return self._key(args, kwargs)

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[None]:
        """Forget the cached value for these arguments (`Cache.delete` of their key)."""
        return self._cache.delete(self._key(args, kwargs))

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """Call the function now for these arguments, cache its value and return it.

        Concurrent calls with the same arguments share this call (`Cache.refresh`).

        Raises:
            SourceNotFound: The function raised it.
            LoaderError: The function failed.
        """
        return self._refresh(self._key(args, kwargs), args, kwargs)

    async def _refresh(self, key: str, args: Any, kwargs: Any) -> R:
        value: R = await self._cache.refresh(
            key,
            functools.partial(self._function, *args, **kwargs),
            ttl=self._ttl,
            stale_ttl=self._stale_ttl,
            tags=self._tags,
        )
        return value

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...

    @overload
    def __get__(
        self: Cached[Concatenate[Instance, Q], R],
        instance: Instance,
        owner: type[Any] | None = None,
    ) -> Cached[Q, R]: ...

    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        return _BoundCached(self, instance)


class _BoundCached(Cached[P, R]):
    # A memoized method of one object: that object is passed first. (No docstring: __doc__
    # is the method's, as __name__, __wrapped__ and the others are, through __getattr__.)

    # Made on every attribute access, as a bound method is: two references, nothing copied.
    def __init__(self, parent: Cached[..., R], instance: object) -> None:
        self._parent = parent
        self._instance = instance

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self._parent.__doc__

    @property
    def __module__(self) -> str:  # type: ignore[override]
        return self._parent.__module__

    def __getattr__(self, name: str) -> Any:
        # __name__, __doc__, __wrapped__ and the like are the function's.
        if name == "_parent":  # not set yet (copy, pickle): no endless recursion
            raise AttributeError(name)
        return getattr(self._parent, name)

    def __repr__(self) -> str:
        return f"<bound cached {self._parent._function.__qualname__} of {self._instance!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        return self._parent(self._instance, *args, **kwargs)

    def key(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key a call with these arguments reads and writes."""
        return self._parent._key((self._instance, *args), kwargs)

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[None]:
        """Forget the cached value for these arguments (`Cache.delete` of their key)."""
        parent = self._parent
        return parent._cache.delete(parent._key((self._instance, *args), kwargs))

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """Call the method now for these arguments, cache its value and return it."""
        parent = self._parent
        bound = (self._instance, *args)
        return parent._refresh(parent._key(bound, kwargs), bound, kwargs)


class Memoizer:
    """What `Cache.cached(...)` returns: validated options, applied to a function by calling.

    Raises:
        ConfigurationError: (when applied) The function is not an `async def`, or the key
            template names something the function has no parameter for.
    """

    __slots__ = ("_cache", "_key", "_stale_ttl", "_tags", "_ttl")

    def __init__(
        self,
        cache: Cache,
        *,
        ttl: Duration | None,
        stale_ttl: Duration | None,
        key: str | None,
        tags: Iterable[str] | None = None,
    ) -> None:
        self._cache = cache
        self._tags = None if tags is None else check_tags(tags)
        self._ttl = None if ttl is None else duration(ttl, name="ttl")
        self._stale_ttl = None if stale_ttl is None else duration(stale_ttl, name="stale_ttl")
        if key is not None and (not isinstance(key, str) or not key):
            raise ConfigurationError(
                f"key must be a non-empty template str such as 'user:{{user_id}}', got {key!r}"
            )
        self._key = key

    def __call__(self, function: Callable[P, Awaitable[R]]) -> Cached[P, R]:
        name = getattr(function, "__qualname__", repr(function))
        if inspect.isasyncgenfunction(function):
            raise ConfigurationError(
                f"cache.cached memoizes an async def function's result; {name} is an async "
                "generator, whose items cannot be cached as one value"
            )
        if not inspect.iscoroutinefunction(function):
            raise ConfigurationError(
                f"cache.cached memoizes async def functions; {name} is not one (memoize a sync "
                "function with functools.lru_cache)"
            )
        signature = _Signature(function, name)
        head = None
        if self._key is not None:
            key = _template_key(self._key, signature)
        else:
            receiver = bool(signature.names) and signature.names[0] in _RECEIVER_NAMES
            key, head = _default_key(function, signature, skip=int(receiver))
        return Cached(self._cache, function, key, self._ttl, self._stale_ttl, self._tags, head)
