"""`S3Loader`: objects from Amazon S3 (`s3://bucket/key` keys), revalidated by ETag.

| key | call | value |
|---|---|---|
| `s3://bucket/path/to/key` | GetObject | `bytes` (or the path of a file under `directory`) |

When an entry goes stale or expires, the cache revalidates it with `IfNoneMatch=<etag>`: an
unchanged object answers 304 and costs no download.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Final

from polycache._contracts import Loaded
from polycache._errors import ConfigurationError, LoaderError
from polycache._extras import require_extra
from polycache.loaders import _aws
from polycache.loaders._transform import Transform, apply_transform, check_transform

__all__ = ["S3Loader"]

_NOT_FOUND: Final = frozenset({"NoSuchKey", "404", "NotFound"})
_NOT_MODIFIED: Final = frozenset({"304", "NotModified"})
_CHUNK_BYTES: Final = 1024 * 1024


def _split(name: str) -> tuple[str, str]:
    if isinstance(name, str):
        bucket, _, object_key = name.partition("/")
        if bucket and object_key:
            return bucket, object_key
    raise ConfigurationError(f"S3Loader needs a name like bucket/key, got {name!r}")


class S3Loader:
    """Loads `s3://bucket/key` keys from S3 (the built-in loader for that scheme).

    Args:
        max_bytes: The largest object to load; a bigger one fails with `LoaderError` before
            its body is read. None for no limit.
        directory: Write each object to a file under this directory (`/tmp` on Lambda) and
            return the file's path instead of its bytes, as lambda-cache does. The file is
            `directory/bucket/key`, replaced atomically when the object changes.
        transform: `"json"`, `"binary"` or `"auto"` (by the key's suffix) applied to the bytes
            (not with `directory`).
        clients: Returns the client for a service name; defaults to polycache's shared
            botocore clients. Inject one to use your own session or a test double.

    Example:
        ```python
        cache.register_loader("model", S3Loader(directory="/tmp", max_bytes=50_000_000))
        path = await cache.get("model://models/v3/weights.bin")
        ```
    """

    __slots__ = ("_clients", "_directory", "_max_bytes", "_transform")

    def __init__(
        self,
        *,
        max_bytes: int | None = None,
        directory: str | os.PathLike[str] | None = None,
        transform: Transform | None = None,
        clients: _aws.ClientFactory | None = None,
    ) -> None:
        if max_bytes is not None and (
            not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0
        ):
            raise ConfigurationError(f"max_bytes must be an int >= 0 or None, got {max_bytes!r}")
        if directory is not None and not isinstance(directory, str | os.PathLike):
            raise ConfigurationError(f"directory must be a path or None, got {directory!r}")
        if directory is not None and transform is not None:
            raise ConfigurationError(
                "S3Loader takes directory (the value is a file path) or transform, not both"
            )
        if clients is None:
            require_extra("the s3: loader", "aws", "botocore")
        self._max_bytes = max_bytes
        self._directory = None if directory is None else Path(directory)
        self._transform = check_transform(transform)
        self._clients = _aws.client_factory(clients)

    def __repr__(self) -> str:
        directory = None if self._directory is None else str(self._directory)
        return (
            f"S3Loader(max_bytes={self._max_bytes!r}, directory={directory!r}, "
            f"transform={self._transform!r})"
        )

    async def __call__(self, name: str) -> Loaded:
        """Load one object, with its ETag as the validator for later revalidation.

        Args:
            name: `bucket/key`.

        Raises:
            SourceNotFound: No such key.
            LoaderError: Over `max_bytes`, or any other failure (naming the object and the AWS
                error code).
            ConfigurationError: A name without a bucket and a key.
        """
        return await self.load_conditional(name, None)

    async def load_conditional(self, name: str, validator: str | None) -> Loaded:
        """Load one object unless its ETag still equals `validator`.

        Args:
            name: `bucket/key`.
            validator: The ETag of the cached value, or None to load unconditionally.

        Returns:
            `Loaded(value, validator=etag)`, or `Loaded(None, validator, modified=False)` when
            the object is unchanged (S3 answered 304: no body was sent).
        """
        bucket, object_key = _split(name)
        what = f"S3 object {name!r}"
        target = self._target(bucket, object_key, what)
        if target is not None and not target.exists():
            # This environment has not got the file (a value shared through a remote backend).
            validator = None
        arguments: dict[str, Any] = {"Bucket": bucket, "Key": object_key}
        if validator is not None:
            arguments["IfNoneMatch"] = validator
        client = await self._clients("s3")
        try:
            response = await client.get_object(**arguments)
        except Exception as exc:
            if validator is not None and _aws.error_code(exc) in _NOT_MODIFIED:
                return Loaded(None, validator=validator, modified=False)
            raise _aws.translate_error(exc, what, not_found=_NOT_FOUND) from exc
        etag = response.get("ETag")
        with _aws.translating(what, not_found=_NOT_FOUND):
            value = await self._read(response, what, target)
        if target is None:
            value = apply_transform(value, self._transform, name=name, what=what)
        return Loaded(value, validator=etag)

    def _target(self, bucket: str, object_key: str, what: str) -> Path | None:
        if self._directory is None:
            return None
        root = self._directory.resolve()
        target = (root / bucket / object_key).resolve()
        if not target.is_relative_to(root) or target == root:
            raise ConfigurationError(f"{what}: the object key leads outside {root}")
        return target

    async def _read(self, response: Mapping[str, Any], what: str, target: Path | None) -> Any:
        body = response["Body"]
        # Leaving the block releases the connection to the pool, or drops it mid-body.
        async with body:
            length = response.get("ContentLength")
            if self._max_bytes is not None and length is not None and length > self._max_bytes:
                raise LoaderError(f"{what} is {length} bytes, over max_bytes={self._max_bytes}")
            if target is None:
                data: bytes = await body.read()
                self._check_size(len(data), what)
                return data
            return await self._write(body, what, target)

    async def _write(self, body: Any, what: str, target: Path) -> str:
        # File work runs in a thread: a slow disk must not stall the event loop.
        file, partial = await asyncio.to_thread(_open_partial, target)
        try:
            written = 0
            while chunk := await body.read(_CHUNK_BYTES):
                written += len(chunk)
                self._check_size(written, what)
                await asyncio.to_thread(file.write, chunk)
            await asyncio.to_thread(_commit, file, partial, target)
        except BaseException:
            _discard(file, partial)
            raise
        return str(target)

    def _check_size(self, size: int, what: str) -> None:
        if self._max_bytes is not None and size > self._max_bytes:
            raise LoaderError(f"{what} is over max_bytes={self._max_bytes} ({size} bytes read)")


def _open_partial(target: Path) -> tuple[BinaryIO, str]:
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    return os.fdopen(descriptor, "wb"), partial


def _commit(file: BinaryIO, partial: str, target: Path) -> None:
    file.close()
    os.replace(partial, target)


def _discard(file: BinaryIO, partial: str) -> None:
    file.close()
    with contextlib.suppress(OSError):
        os.unlink(partial)
