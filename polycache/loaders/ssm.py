"""`SsmLoader`: values from AWS Systems Manager Parameter Store (`ssm:` keys).

| key | call | value |
|---|---|---|
| `ssm:/prod/db/url` | GetParameter, decrypted | `str` (`list[str]` for a StringList) |
| `ssm:/prod/db/url:3` | GetParameter of version 3 | as above |
| `ssm:/prod/db/url:live` | GetParameter of the version labelled `live` | as above |
| `ssm:/app/prod/` | GetParametersByPath, every page | `dict`: name under the path -> value |

`Cache.get_many` loads plain names in batches of ten (GetParameters).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Final

from polycache._errors import ConfigurationError, SourceNotFound
from polycache._extras import require_extra
from polycache.loaders import _aws
from polycache.loaders._transform import Transform, apply_transform, check_transform

__all__ = ["SsmLoader"]

_NOT_FOUND: Final = frozenset({"ParameterNotFound", "ParameterVersionNotFound"})
_BATCH_SIZE: Final = 10
_PAGE_SIZE: Final = 10
# An ARN names the parameter after its sixth colon: arn:aws:ssm:region:account:parameter/name
_ARN_COLONS: Final = 5


def _selector(name: str) -> str | None:
    """The `:version` or `:label` part of a parameter name, if any."""
    rest = name.split(":", _ARN_COLONS)[-1] if name.startswith("arn:") else name
    return rest.partition(":")[2] or None


class SsmLoader:
    """Loads `ssm:` keys from Parameter Store (the built-in loader for that scheme).

    Args:
        decrypt: Decrypt SecureString parameters (`WithDecryption`).
        transform: `"json"`, `"binary"` or `"auto"` (by the name's suffix) applied to each
            value; a StringList is then transformed as one string instead of being split.
        recursive: For a path key (`ssm:/app/prod/`), include parameters in sub-paths, named
            relative to the path (`db/url`).
        clients: Returns the client for a service name; defaults to polycache's shared
            botocore clients. Inject one to use your own session or a test double.

    Example:
        ```python
        cache.register_loader("config", SsmLoader(transform="json"), ttl=60)
        settings = await cache.get("config:/app/prod/settings")
        ```
    """

    __slots__ = ("_clients", "_decrypt", "_recursive", "_transform")

    def __init__(
        self,
        *,
        decrypt: bool = True,
        transform: Transform | None = None,
        recursive: bool = True,
        clients: _aws.ClientFactory | None = None,
    ) -> None:
        if not isinstance(decrypt, bool):
            raise ConfigurationError(f"decrypt must be a bool, got {decrypt!r}")
        if not isinstance(recursive, bool):
            raise ConfigurationError(f"recursive must be a bool, got {recursive!r}")
        if clients is None:
            require_extra("the ssm: loader", "aws", "botocore")
        self._decrypt = decrypt
        self._transform = check_transform(transform)
        self._recursive = recursive
        self._clients = _aws.client_factory(clients)

    def __repr__(self) -> str:
        return (
            f"SsmLoader(decrypt={self._decrypt}, transform={self._transform!r}, "
            f"recursive={self._recursive})"
        )

    async def __call__(self, name: str) -> Any:
        """Load one parameter, or every parameter under a path ending in `/`.

        Args:
            name: `/prod/db/url`, `/prod/db/url:3`, `/prod/db/url:label`, an ARN, or `/app/prod/`.

        Raises:
            SourceNotFound: No such parameter, version or label.
            LoaderError: Any other failure, naming the parameter and the AWS error code.
            ConfigurationError: An empty name.
        """
        what = _what(name)
        if name.endswith("/"):
            return await self._load_path(name, what)
        client = await self._clients("ssm")
        with _aws.translating(what, not_found=_NOT_FOUND):
            response = await client.get_parameter(Name=name, WithDecryption=self._decrypt)
        return self._value(response["Parameter"], name)

    async def load_many(self, names: Sequence[str]) -> Mapping[str, Any]:
        """Load several names with GetParameters, ten a call; paths and selectors one by one.

        A malformed name fails alone, with `ConfigurationError` as its result.

        Returns:
            A mapping from name to value or to the error of that name; a name the source does
            not have is absent (or maps to `SourceNotFound`).
        """
        plain = [
            name
            for name in names
            if isinstance(name, str) and name and not name.endswith("/") and _selector(name) is None
        ]
        batched = set(plain)
        single = [name for name in names if name not in batched]
        chunks = [plain[start : start + _BATCH_SIZE] for start in range(0, len(plain), _BATCH_SIZE)]
        results: dict[str, Any] = {}
        outcomes = await asyncio.gather(
            *(self._load_chunk(chunk) for chunk in chunks),
            *(self._load_one(name) for name in single),
        )
        for outcome in outcomes:
            results.update(outcome)
        return results

    async def _load_one(self, name: str) -> dict[str, Any]:
        try:
            return {name: await self(name)}
        except Exception as exc:  # reported per name, never sinking the batch
            return {name: exc}

    async def _load_chunk(self, chunk: list[str]) -> dict[str, Any]:
        try:
            client = await self._clients("ssm")
            response = await client.get_parameters(Names=chunk, WithDecryption=self._decrypt)
        except Exception as exc:  # the chunk's error belongs to each of its names
            return {
                name: _aws.translate_error(exc, _what(name), not_found=_NOT_FOUND) for name in chunk
            }
        wanted = set(chunk)
        results: dict[str, Any] = {}
        for parameter in response.get("Parameters", []):
            for candidate in (parameter.get("Name"), parameter.get("ARN")):
                if candidate in wanted:
                    try:
                        results[candidate] = self._value(parameter, candidate)
                    except Exception as exc:  # one bad value, not the batch
                        results[candidate] = exc
                    break
        for name in response.get("InvalidParameters", []):
            if name in wanted:
                results[name] = SourceNotFound(f"{_what(name)} not found (InvalidParameters)")
        return results

    async def _load_path(self, path: str, what: str) -> dict[str, Any]:
        client = await self._clients("ssm")
        values: dict[str, Any] = {}
        arguments: dict[str, Any] = {
            "Path": path,
            "Recursive": self._recursive,
            "WithDecryption": self._decrypt,
            "MaxResults": _PAGE_SIZE,
        }
        with _aws.translating(what, not_found=_NOT_FOUND):
            while True:
                response = await client.get_parameters_by_path(**arguments)
                for parameter in response.get("Parameters", []):
                    full_name = parameter["Name"]
                    relative = full_name[len(path) :] if full_name.startswith(path) else full_name
                    values[relative] = self._value(parameter, full_name)
                token = response.get("NextToken")
                if not token:
                    return values
                arguments["NextToken"] = token

    def _value(self, parameter: Mapping[str, Any], name: str) -> Any:
        value = parameter["Value"]
        if self._transform is None and parameter.get("Type") == "StringList":
            return value.split(",")
        return apply_transform(value, self._transform, name=name, what=_what(name))


def _what(name: str) -> str:
    """The parameter as error messages name it; a name that is no name is refused."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"SsmLoader needs a parameter name, got {name!r}")
    if name.endswith("/"):
        return f"SSM parameters under {name!r}"
    return f"SSM parameter {name!r}"
