"""`SecretsManagerLoader`: values from AWS Secrets Manager (`secretsmanager:` keys).

| key | call | value |
|---|---|---|
| `secretsmanager:prod/db` (a name or an ARN) | GetSecretValue | `str` (SecretString) or `bytes` |
| `secretsmanager:prod/db?versionStage=AWSPREVIOUS` | GetSecretValue of that stage | as above |
| `secretsmanager:prod/db?versionId=UUID` | GetSecretValue of that version | as above |

`Cache.get_many` loads names without a version in batches of twenty (BatchGetSecretValue).
Secret values never appear in a message, log line or repr.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from polycache._errors import ConfigurationError, SourceNotFound
from polycache._extras import require_extra
from polycache.loaders import _aws
from polycache.loaders._transform import Transform, apply_transform, check_transform

__all__ = ["SecretsManagerLoader"]

_NOT_FOUND: Final = frozenset({"ResourceNotFoundException"})
_BATCH_SIZE: Final = 20
_BATCH_DENIED: Final = frozenset({"AccessDeniedException", "UnknownOperationException"})
_SELECTORS: Final = {"versionStage": "VersionStage", "versionId": "VersionId"}


@dataclass(frozen=True, slots=True)
class _SecretName:
    secret_id: str
    selector: Mapping[str, str]


def _parse(name: str) -> _SecretName:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"SecretsManagerLoader needs a secret name, got {name!r}")
    secret_id, _, query = name.partition("?")
    if not secret_id:
        raise ConfigurationError(f"SecretsManagerLoader needs a secret name, got {name!r}")
    selector: dict[str, str] = {}
    for field, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if field not in _SELECTORS or not value:
            raise ConfigurationError(
                f"secret {name!r}: expected ?versionStage=STAGE or ?versionId=ID, "
                f"got {field!r}={value!r}"
            )
        selector[_SELECTORS[field]] = value
    return _SecretName(secret_id, selector)


class SecretsManagerLoader:
    """Loads `secretsmanager:` keys from Secrets Manager (the built-in loader for that scheme).

    Args:
        version_stage: The stage to read when the key names none (AWS's default: `AWSCURRENT`).
        transform: `"json"`, `"binary"` or `"auto"` (by the name's suffix) applied to each value.
        clients: Returns the client for a service name; defaults to polycache's shared
            botocore clients. Inject one to use your own session or a test double.

    Example:
        ```python
        cache.register_loader("creds", SecretsManagerLoader(transform="json"), ttl=300)
        creds = await cache.get("creds:prod/db")  # a dict
        ```
    """

    __slots__ = ("_clients", "_transform", "_version_stage")

    def __init__(
        self,
        *,
        version_stage: str | None = None,
        transform: Transform | None = None,
        clients: _aws.ClientFactory | None = None,
    ) -> None:
        if version_stage is not None and (not isinstance(version_stage, str) or not version_stage):
            raise ConfigurationError(
                f"version_stage must be a non-empty str or None, got {version_stage!r}"
            )
        if clients is None:
            require_extra("the secretsmanager: loader", "aws", "botocore")
        self._version_stage = version_stage
        self._transform = check_transform(transform)
        self._clients = _aws.client_factory(clients)

    def __repr__(self) -> str:
        return (
            f"SecretsManagerLoader(version_stage={self._version_stage!r}, "
            f"transform={self._transform!r})"
        )

    async def __call__(self, name: str) -> Any:
        """Load one secret.

        Args:
            name: A secret name or ARN, optionally with `?versionStage=` or `?versionId=`.

        Raises:
            SourceNotFound: No such secret, or no such version of it.
            LoaderError: Any other failure, naming the secret and the AWS error code.
            ConfigurationError: An empty name or an unknown selector.
        """
        parsed = _parse(name)
        arguments: dict[str, Any] = {"SecretId": parsed.secret_id, **self._selector(parsed)}
        client = await self._clients("secretsmanager")
        with _aws.translating(_what(name), not_found=_NOT_FOUND):
            response = await client.get_secret_value(**arguments)
        return self._value(response, name)

    async def load_many(self, names: Sequence[str]) -> Mapping[str, Any]:
        """Load several secrets with BatchGetSecretValue, twenty a call.

        Names with a version (in the key or from `version_stage`) are read one by one, since
        the batch call reads current versions only.

        Returns:
            A mapping from name to value or to the error of that name; a name the source does
            not have is absent (or maps to `SourceNotFound`).
        """
        plain: list[str] = []
        single: list[str] = []
        for name in names:
            try:
                alone = bool(self._selector(_parse(name)))
            except ConfigurationError:
                alone = True  # a malformed name is read alone, to fail alone
            (single if alone else plain).append(name)
        chunks = [plain[start : start + _BATCH_SIZE] for start in range(0, len(plain), _BATCH_SIZE)]
        outcomes = await asyncio.gather(
            *(self._load_chunk(chunk) for chunk in chunks),
            *(self._load_one(name) for name in single),
        )
        results: dict[str, Any] = {}
        for outcome in outcomes:
            results.update(outcome)
        return results

    async def _load_one(self, name: str) -> dict[str, Any]:
        try:
            return {name: await self(name)}
        except Exception as exc:  # reported per name, never sinking the batch
            return {name: exc}

    async def _load_chunk(self, chunk: list[str]) -> dict[str, Any]:
        results: dict[str, Any] = {}
        wanted = set(chunk)
        arguments: dict[str, Any] = {"SecretIdList": chunk}
        try:
            client = await self._clients("secretsmanager")
            while True:
                response = await client.batch_get_secret_value(**arguments)
                for secret in response.get("SecretValues", []):
                    for candidate in (secret.get("Name"), secret.get("ARN")):
                        if candidate in wanted:
                            results[candidate] = self._guarded_value(secret, candidate)
                            break
                for error in response.get("Errors", []):
                    self._record_error(results, wanted, error)
                token = response.get("NextToken")
                if not token:
                    return results
                arguments["NextToken"] = token
        except Exception as exc:  # the chunk's error belongs to each of its names not yet read
            unread = [name for name in chunk if name not in results]
            if _aws.error_code(exc) in _BATCH_DENIED:
                # Many roles may read their secrets but not call BatchGetSecretValue.
                for outcome in await asyncio.gather(*(self._load_one(name) for name in unread)):
                    results.update(outcome)
                return results
            for name in unread:
                results[name] = _aws.translate_error(exc, _what(name), not_found=_NOT_FOUND)
            return results

    def _record_error(
        self, results: dict[str, Any], wanted: set[str], error: Mapping[str, Any]
    ) -> None:
        name = error.get("SecretId")
        if name not in wanted:
            return
        code = str(error.get("ErrorCode") or "UnknownError")
        if code in _NOT_FOUND:
            results[name] = SourceNotFound(f"{_what(name)} not found ({code})")
        else:
            results[name] = _aws.translate_error(
                _BatchError(code), _what(name), not_found=_NOT_FOUND
            )

    def _guarded_value(self, secret: Mapping[str, Any], name: str) -> Any:
        try:
            return self._value(secret, name)
        except Exception as exc:  # one bad value, not the batch
            return exc

    def _selector(self, parsed: _SecretName) -> dict[str, str]:
        if parsed.selector:
            return dict(parsed.selector)
        if self._version_stage is not None:
            return {"VersionStage": self._version_stage}
        return {}

    def _value(self, response: Mapping[str, Any], name: str) -> Any:
        if response.get("SecretString") is not None:
            value: Any = response["SecretString"]
        else:
            value = response.get("SecretBinary")
            if value is None:
                raise SourceNotFound(f"{_what(name)} has no value in this version")
        return apply_transform(value, self._transform, name=name, what=_what(name))


def _what(name: str) -> str:
    return f"Secrets Manager secret {name!r}"


class _BatchError(Exception):
    """A per-secret error reported inside a successful BatchGetSecretValue response."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}}
        self.operation_name = "BatchGetSecretValue"
