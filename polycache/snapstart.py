"""Lambda SnapStart: a cache that survives being snapshotted and restored elsewhere.

With SnapStart, Lambda runs a function's INIT once, snapshots the memory of the execution
environment, and starts later environments from that snapshot, maybe days later, with other
credentials and on another network. A cache made during INIT is in the snapshot, and so are
its open connections (dead after the restore), its AWS credentials (those of the environment
that made the snapshot) and its values (as old as the snapshot).

`register(cache)` hands two hooks to the runtime through `snapshot_restore_py` (AWS's
library, which Lambda's Python runtimes ship; the `snapstart` extra installs it elsewhere):

- before the snapshot, background refreshes are cancelled and every connection is closed: the
  backend's clients (`Cache.aclose`, on the execution environment's event loop) and the AWS
  loaders' clients;
- after the restore, the AWS loaders read their credentials and endpoints anew, every entry
  loaded before the snapshot is marked stale (served at once while one background refresh runs),
  and the keys named by `reload_on_restore` (secrets, say) are dropped, so that they load from
  the source before use. The hook makes no network call: a restore stays fast.

A cache built during a SnapStart INIT (`AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`) registers
itself, with `POLYCACHE_SNAPSTART_RELOAD` as its `reload_on_restore`, unless
`POLYCACHE_SNAPSTART=0`.
"""

from __future__ import annotations

import fnmatch
import logging
import random
import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from polycache._config import Duration, duration
from polycache._errors import ConfigurationError
from polycache._extras import require_extra

if TYPE_CHECKING:
    from polycache._cache import Cache

__all__ = [
    "DEFAULT_STALE_FOR",
    "after_restore",
    "before_snapshot",
    "register",
    "register_from_environment",
]

logger = logging.getLogger("polycache")

DEFAULT_STALE_FOR: Final = 60.0
"""Seconds after a restore during which an entry from the snapshot is served while it refreshes."""

RELOAD_VARIABLE: Final = "POLYCACHE_SNAPSTART_RELOAD"
SWITCH_VARIABLE: Final = "POLYCACHE_SNAPSTART"


@dataclass(frozen=True, slots=True)
class _Registration:
    reload: Callable[[str], bool]
    stale_for: float


_lock = threading.Lock()
# The caches to look after; a cache nobody else holds is not kept alive by its registration.
_caches: weakref.WeakKeyDictionary[Cache, _Registration] = weakref.WeakKeyDictionary()
_hooks_registered = False


def register(
    cache: Cache,
    *,
    reload_on_restore: Iterable[str] | Callable[[str], bool] = (),
    stale_for: Duration = DEFAULT_STALE_FOR,
) -> None:
    """Make `cache` safe to snapshot, and fast after a restore (Lambda SnapStart).

    Call it during INIT, at module scope, where the cache is made. Registering a cache again
    replaces its options. The runtime's hooks are registered once per process, at the first
    call: before-snapshot hooks run in reverse order of registration, so hooks of yours
    registered later still find the cache connected; after-restore hooks run in order, so yours
    find it restored.

    Example:
        ```python
        cache = polycache.Cache.from_env()
        polycache.snapstart.register(cache, reload_on_restore=["secretsmanager:*"])
        ```

    Args:
        cache: The cache.
        reload_on_restore: Keys that must not be served from the snapshot, loaded afresh before
            their first use after a restore: glob patterns (`"secretsmanager:*"`,
            `"ssm:/prod/keys/*"`; `*` matches `/` too), or a function of the key returning
            True for them.
        stale_for: Seconds after a restore during which every other entry from the snapshot
            is served at once, stale, while one background refresh per key runs, even if its
            own time ran out while the snapshot was stored.

    Raises:
        ConfigurationError: `snapshot_restore_py` is not installed (`pip install
            'polycache[snapstart]'`), `cache` is not a Cache, `reload_on_restore` is a lone
            str or holds something other than non-empty str patterns, or `stale_for` is not a
            number of seconds >= 0.
    """
    registration = _registration(cache, reload_on_restore, stale_for)
    require_extra("polycache.snapstart.register", "snapstart", "snapshot_restore_py")
    _add(cache, registration)


def register_from_environment(cache: Cache, environ: Mapping[str, str]) -> bool:
    """Register `cache` as the SnapStart INIT environment `environ` asks (the automatic opt-in).

    `POLYCACHE_SNAPSTART=0` turns the automatic registration off; `POLYCACHE_SNAPSTART_RELOAD`
    holds comma-separated `reload_on_restore` patterns. Without `snapshot_restore_py` it only
    logs a warning: the cache works, without hooks.

    Returns:
        Whether the hooks were registered.

    Raises:
        ConfigurationError: `POLYCACHE_SNAPSTART` is not `0` or `1`, or
            `POLYCACHE_SNAPSTART_RELOAD` holds an empty pattern.
    """
    switch = environ.get(SWITCH_VARIABLE, "1").strip()
    if switch not in ("0", "1"):
        raise ConfigurationError(
            f"{SWITCH_VARIABLE} must be 1 (register the SnapStart hooks of every cache built "
            f"during a SnapStart INIT, the default) or 0, got {switch!r}"
        )
    if switch == "0":
        return False
    raw = environ.get(RELOAD_VARIABLE, "").strip()
    patterns = [pattern.strip() for pattern in raw.split(",")] if raw else []
    if "" in patterns:
        raise ConfigurationError(
            f"{RELOAD_VARIABLE} holds comma-separated key patterns such as "
            f"'secretsmanager:*,ssm:/prod/keys/*', with none empty; got {raw!r}"
        )
    registration = _registration(cache, patterns, DEFAULT_STALE_FOR)
    try:
        require_extra("SnapStart support", "snapstart", "snapshot_restore_py")
    except ConfigurationError as exc:
        logger.warning("polycache: %s; this cache registers no SnapStart hooks", exc)
        return False
    _add(cache, registration)
    return True


def before_snapshot() -> None:
    """The before-snapshot hook: end background refreshes and close every connection.

    Each registered cache's `aclose()` runs on the execution environment's event loop (the
    one `lambda_handler` and `cache.sync` use), where its loop-bound clients live. A failure
    is logged, never raised: it must not fail the snapshot.
    """
    from polycache._lambda import run_on_environment_loop

    for cache in _registered():
        try:
            run_on_environment_loop(cache.aclose)
        except Exception as exc:
            logger.warning(
                "polycache: closing %r before the snapshot failed: %s", cache, type(exc).__name__
            )


def after_restore() -> None:
    """The after-restore hook: new credentials, entries from the snapshot marked stale.

    Python's `random` module is seeded anew from the OS (polycache's jitter draws from it). The
    AWS loaders' clients are closed and their next call reads the credentials and endpoints of
    the restored environment. Each registered cache's in-process entries become
    stale (served while they refresh), its `reload_on_restore` keys are dropped, and a
    near-cache's local layer is emptied. Nothing here waits on the network.
    """
    # Every environment restored from one snapshot starts with the same pseudorandom state:
    # the fleet would draw the same TTL jitter and early-refresh moments (Lambda's guide on
    # uniqueness asks for a new seed after a restore).
    random.seed()
    aws = sys.modules.get("polycache.loaders._aws")
    if aws is not None:
        aws.renew_session()
    for cache in _registered():
        registration = _caches.get(cache)
        if registration is not None:
            cache._restored(registration.reload, registration.stale_for)


def _registered() -> list[Cache]:
    with _lock:
        return list(_caches)


def _add(cache: Cache, registration: _Registration) -> None:
    global _hooks_registered
    from snapshot_restore_py import register_after_restore, register_before_snapshot

    with _lock:
        _caches[cache] = registration
        if not _hooks_registered:
            register_before_snapshot(before_snapshot)
            register_after_restore(after_restore)
            _hooks_registered = True


def _registration(
    cache: object,
    reload_on_restore: Iterable[str] | Callable[[str], bool],
    stale_for: Duration,
) -> _Registration:
    from polycache._cache import Cache

    if not isinstance(cache, Cache):
        raise ConfigurationError(
            f"polycache.snapstart.register takes a polycache.Cache, got {type(cache).__name__}"
        )
    seconds = duration(stale_for, name="stale_for")
    if callable(reload_on_restore):
        return _Registration(reload_on_restore, seconds)
    return _Registration(_matcher(reload_on_restore), seconds)


def _never(key: str) -> bool:
    return False


def _matcher(patterns: object) -> Callable[[str], bool]:
    if isinstance(patterns, str | bytes) or not isinstance(patterns, Iterable):
        raise ConfigurationError(
            "reload_on_restore takes a list of key patterns (['secretsmanager:*']) or a "
            f"function of the key, got {type(patterns).__name__} {patterns!r}"
        )
    checked = list(patterns)
    for pattern in checked:
        if not isinstance(pattern, str) or not pattern:
            raise ConfigurationError(
                f"reload_on_restore's patterns must be non-empty str, got {pattern!r}"
            )
    if not checked:
        return _never
    expression = re.compile("|".join(fnmatch.translate(pattern) for pattern in checked))
    return lambda key: expression.match(key) is not None
