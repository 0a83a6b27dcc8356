"""The loader table: which loader serves a key, under which policy, with what capabilities.

Capabilities (batching, conditional reloads) are resolved once, when a loader is registered,
so that no miss pays for a runtime `Protocol` check.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from polycache._contracts import BatchLoader, ConditionalLoader, LoaderFunction
from polycache._errors import ConfigurationError
from polycache._policy import Policy
from polycache._tags import Tags, TagsOption, check_tags

__all__ = ["LoaderTable", "Route", "check_async_callable", "zero_argument_route"]

# Loader schemes that come with polycache; their modules (and botocore) load on first use.
BUILTIN_LOADERS: Final = {
    "ssm": ("polycache.loaders.ssm", "SsmLoader"),
    "secretsmanager": ("polycache.loaders.secretsmanager", "SecretsManagerLoader"),
    "s3": ("polycache.loaders.s3", "S3Loader"),
    "dynamodb": ("polycache.loaders.dynamodb", "DynamoDbLoader"),
    "appconfig": ("polycache.loaders.appconfig", "AppConfigLoader"),
}


class Route:
    """How one key is loaded: the loader, the name it is called with, and the policy.

    Attributes:
        load: `await load(name)` returns the value.
        name: The name after the key's scheme.
        policy: The durations for this key.
        scheme: The loader's scheme, or None for a loader given with the call.
        batch: The loader, if it can load many names at once.
        conditional: The loader, if it can revalidate a cached value.
    """

    __slots__ = ("batch", "conditional", "load", "name", "policy", "scheme", "tags")

    def __init__(
        self,
        load: LoaderFunction,
        name: str,
        policy: Policy,
        scheme: str | None = None,
        batch: BatchLoader | None = None,
        conditional: ConditionalLoader | None = None,
        tags: Tags | Callable[[str], Iterable[str]] = (),
    ) -> None:
        self.load = load
        self.name = name
        self.policy = policy
        self.scheme = scheme
        self.batch = batch
        self.conditional = conditional
        self.tags = tags

    def tag_names(self) -> Tags:
        """The tags of what this route loads.

        Raises:
            ConfigurationError: The loader's tag function returned something else than tags.
        """
        tags = self.tags
        if callable(tags):
            return check_tags(tags(self.name), f"the tags for {self.name!r}")
        return tags

    def with_policy(self, policy: Policy) -> Route:
        """This route under another policy (a call's own durations)."""
        return Route(
            self.load, self.name, policy, self.scheme, self.batch, self.conditional, self.tags
        )


class _Registered:
    __slots__ = ("batch", "conditional", "load", "policy", "tags")

    def __init__(
        self,
        load: LoaderFunction,
        policy: Policy,
        tags: Tags | Callable[[str], Iterable[str]] = (),
    ) -> None:
        self.load = load
        self.policy = policy
        self.tags = tags
        self.batch = load if isinstance(load, BatchLoader) else None
        self.conditional = load if isinstance(load, ConditionalLoader) else None


def check_async_callable(loader: Any, what: str) -> None:
    """Reject what cannot be a loader: not callable, or a plain `def` function.

    An object whose `__call__` is `async def` is accepted, and so is a callable whose kind
    cannot be told before the call (a `lambda: fetch()` returning a coroutine); what that
    returns is checked when it is called.

    Raises:
        ConfigurationError: naming `what` and what was expected.
    """
    if not callable(loader):
        raise ConfigurationError(f"{what} must be an async callable, got {loader!r}")
    if inspect.iscoroutinefunction(loader) or inspect.iscoroutinefunction(
        getattr(type(loader), "__call__", None)  # noqa: B004 - the class's, not the instance's
    ):
        return
    if (inspect.isfunction(loader) or inspect.ismethod(loader)) and loader.__name__ != "<lambda>":
        raise ConfigurationError(
            f"{what} must be an async callable (async def), got the plain function "
            f"{loader.__qualname__!r}"
        )


def check_awaitable(result: object, key: str) -> Awaitable[Any]:
    """The value a loader call returned, if it can be awaited.

    Raises:
        ConfigurationError: The loader is not async (it returned a plain value).
    """
    if not inspect.isawaitable(result):
        raise ConfigurationError(
            f"the loader for {key!r} returned {type(result).__name__}, not an awaitable: "
            "loaders must be async callables (async def)"
        )
    return result


class LoaderTable:
    """Scheme -> loader, with the built-ins added on first use.

    Args:
        policy: The cache's policy, which loaders' own durations override.
    """

    __slots__ = ("_loaders", "_policy")

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._loaders: dict[str, _Registered] = {}

    def __repr__(self) -> str:
        return repr(sorted(self._loaders))

    def register(
        self, scheme: str, loader: LoaderFunction, policy: Policy, tags: TagsOption = None
    ) -> None:
        """Load keys `"{scheme}:{name}"` with `loader`, under `policy`, tagged with `tags`."""
        if not isinstance(scheme, str) or not scheme or ":" in scheme:
            raise ConfigurationError(
                f"loader scheme must be a non-empty str without ':', got {scheme!r}"
            )
        check_async_callable(loader, f"loader for {scheme!r}")
        if tags is None:
            tags = ()
        elif not callable(tags):
            tags = check_tags(tags, f"the tags of loader {scheme!r}")
        self._loaders[scheme] = _Registered(loader, policy, tags)

    def _registered(self, scheme: str) -> _Registered | None:
        registered = self._loaders.get(scheme)
        if registered is None and scheme in BUILTIN_LOADERS:
            module_name, attribute = BUILTIN_LOADERS[scheme]
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise ConfigurationError(
                    f"the {scheme}: loader needs its extra: pip install 'polycache[aws]' "
                    f"({exc.name or exc} is not installed)"
                ) from exc
            registered = _Registered(getattr(module, attribute)(), self._policy)
            self._loaders[scheme] = registered
        return registered

    def route(self, key: str) -> Route | None:
        """How `key` is loaded, or None for a plain key."""
        scheme, separator, name = key.partition(":")
        if not separator:
            return None
        registered = self._registered(scheme)
        if registered is None:
            return None
        if name.startswith("//"):
            # URL-style keys: "s3://bucket/key" loads "bucket/key".
            name = name[2:]
        return Route(
            registered.load,
            name,
            registered.policy,
            scheme,
            registered.batch,
            registered.conditional,
            registered.tags,
        )


class _ZeroArgumentLoader:
    """Adapts get_or_load's `loader()` to the `loader(name)` form."""

    __slots__ = ("_loader",)

    def __init__(self, loader: Callable[[], Awaitable[Any]]) -> None:
        self._loader = loader

    def __call__(self, name: str) -> Awaitable[Any]:
        return self._loader()


def zero_argument_route(
    key: str,
    loader: Callable[[], Awaitable[Any]],
    policy: Policy,
    what: str,
    tags: Tags = (),
) -> Route:
    """The route for a loader given with the call (`get_or_load`, `refresh`)."""
    check_async_callable(loader, what)
    return Route(_ZeroArgumentLoader(loader), key, policy, tags=tags)
