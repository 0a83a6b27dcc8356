"""Tags: invalidate every entry that carries a tag, in O(1) backend writes per tag.

In process, an index from tag to the records stored with it lets `invalidate_tags` drop them.
On a shared backend, invalidating a tag writes one small entry, the tag's invalidation time,
under `TAG_PREFIX + tag`; an entry stored with tags carries them and its write time inside its
stored bytes, and a read that finds it checks the tags' times (one bulk read, answered by a
near-cache when there is one): an entry written before one of its tags was invalidated is a miss,
in every process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, TypeAlias

from polycache._errors import ConfigurationError

__all__ = ["TAG_PREFIX", "Tags", "TagsOption", "check_tags", "is_tagged", "tagged", "untagged"]

TAG_PREFIX: Final = "__polycache_tag__:"
"""Where a tag's invalidation time lives in a shared backend."""

TAG_LIFETIME: Final = 7 * 86400.0
"""Seconds a tag's invalidation time is kept (a backend may cap it, as it caps its entries)."""

# Stored bytes that start with this carry tags: the mark + JSON [written_at, [tags]] + b"\n" +
# the serialized value. No serializer's output starts with a NUL byte and a "T".
_MARK: Final = b"\x00T"

Tags: TypeAlias = tuple[str, ...]
TagsOption: TypeAlias = "Iterable[str] | Callable[[str], Iterable[str]] | None"
"""Tags as given to `register_loader`: a list, or a function from the name to a list."""


def check_tags(tags: object, what: str = "tags") -> Tags:
    """The tags as a tuple of non-empty str, in order, without duplicates.

    Raises:
        ConfigurationError: A lone str, or anything but an iterable of non-empty str.
    """
    if isinstance(tags, str | bytes) or not isinstance(tags, Iterable):
        raise ConfigurationError(
            f"{what} must be a list of tag names (str), got {type(tags).__name__} {tags!r}"
        )
    unique: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise ConfigurationError(f"{what} must be non-empty str, got {tag!r}")
        unique[tag] = None
    return tuple(unique)


def is_tagged(data: object) -> bool:
    """True if stored bytes carry tags."""
    return isinstance(data, bytes) and data.startswith(_MARK)


def tagged(data: bytes, tags: Tags, written_at: float) -> bytes:
    """`data` with its tags and write time in front."""
    import json  # imported on first use: `import polycache` stays cheap

    header = json.dumps([written_at, list(tags)], separators=(",", ":")).encode()
    return _MARK + header + b"\n" + data


def untagged(data: bytes) -> tuple[bytes, Tags, float] | None:
    """`(data, tags, written_at)` if `data` carries tags, else None."""
    if not data.startswith(_MARK):
        return None
    header, separator, rest = data[len(_MARK) :].partition(b"\n")
    if not separator:
        return None
    try:
        import json

        written_at, tags = json.loads(header)
    except (ValueError, TypeError):
        return None
    return rest, tuple(tags), float(written_at)
