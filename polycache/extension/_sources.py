"""The read-through side of the extension: AWS sources behind a polycache `Cache`.

`Sources` is the contract for the AWS calls (injectable: tests pass fakes); `AwsSources` makes
them with the loaders' shared AWS clients and translates AWS's errors as the loaders do.
`ReadThrough` puts a `Cache` in front of them: each request calls `get_or_load` with a loader
made for its arguments, so every endpoint gets single-flight, stale-while-revalidate and
negative caching, and keeps the answer already encoded as the bytes the endpoint sends.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import importlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from polycache._cache import Cache
from polycache._errors import ConfigurationError, LoaderError, PolycacheError, SourceNotFound
from polycache.backends.memory import MemoryBackend
from polycache.extension._settings import ExtensionSettings

__all__ = [
    "AwsSources",
    "DynamoDbItem",
    "ReadThrough",
    "SampleConfig",
    "SourceRejected",
    "SourceTimeout",
    "Sources",
    "load_sample_config",
    "refusal",
]

logger = logging.getLogger("polycache.extension")

ClientFactory = Callable[[str], Awaitable[Any]]

_PARAMETER_NOT_FOUND: Final = frozenset({"ParameterNotFound", "ParameterVersionNotFound"})
_SECRET_NOT_FOUND: Final = frozenset({"ResourceNotFoundException"})
_ITEM_NOT_FOUND: Final = frozenset({"ResourceNotFoundException"})
_TIMEOUT_CODES: Final = frozenset(
    {"ReadTimeoutError", "ConnectTimeoutError", "TimeoutError", "RequestTimeout"}
)
_REJECTED_CODES: Final = frozenset(
    {"ValidationException", "InvalidParameterException", "InvalidRequestException"}
)
_KEY_TYPES: Final = frozenset({"S", "N", "B"})


class SourceTimeout(LoaderError):  # noqa: N818 - reads as what happened, like SourceNotFound
    """The source did not answer in time (the endpoint answers 504)."""


class SourceRejected(LoaderError):  # noqa: N818 - reads as what happened, like SourceNotFound
    """The source says the request is malformed (the endpoint answers 400)."""


def refusal(error: LoaderError) -> type[LoaderError]:
    """What a failed load means for the caller: `SourceTimeout`, `SourceRejected` or neither.

    Follows the chain of causes: a load failed by the loaders' translation carries AWS's error,
    whose code says whether AWS timed out or refused the request as malformed.
    """
    from polycache.loaders._aws import error_code

    seen: BaseException | None = error
    for _ in range(8):  # a chain is a few links long; the bound only guards against a cycle
        if seen is None:
            break
        if isinstance(seen, SourceTimeout | TimeoutError):
            return SourceTimeout
        if isinstance(seen, SourceRejected):
            return SourceRejected
        if not isinstance(seen, PolycacheError):
            code = error_code(seen)
            if code in _TIMEOUT_CODES:
                return SourceTimeout
            if code in _REJECTED_CODES:
                return SourceRejected
        seen = seen.__cause__
    return LoaderError


class Sources(Protocol):
    """The AWS calls behind the read-through endpoints.

    Each returns the operation's response as botocore gives it, and raises `SourceNotFound`,
    `SourceTimeout`, `SourceRejected` or `LoaderError`.
    """

    async def get_parameter(self, name: str, *, decrypt: bool) -> Mapping[str, Any]:
        """SSM GetParameter of `name` (which may end in `:version` or `:label`)."""
        ...

    async def get_secret_value(
        self, secret_id: str, *, version_id: str | None, version_stage: str | None
    ) -> Mapping[str, Any]:
        """Secrets Manager GetSecretValue."""
        ...

    async def get_item(self, table: str, key: Mapping[str, Any]) -> Mapping[str, Any]:
        """DynamoDB GetItem; returns the item in attribute-value form."""
        ...

    async def aclose(self) -> None:
        """Release the clients."""
        ...


def _default_clients() -> ClientFactory:
    from polycache.loaders import _aws

    return _aws.client


class AwsSources:
    """`Sources` over the loaders' shared AWS clients, with the loaders' error translation.

    Args:
        timeout: Seconds one call may take, retries included.
        clients: Returns the client for a service name; defaults to `polycache.loaders._aws`.
    """

    __slots__ = ("_clients", "_timeout")

    def __init__(self, *, timeout: float, clients: ClientFactory | None = None) -> None:
        self._timeout = timeout
        self._clients = clients

    async def get_parameter(self, name: str, *, decrypt: bool) -> Mapping[str, Any]:
        """SSM GetParameter."""
        return await self._call(
            "ssm",
            "get_parameter",
            f"parameter {name}",
            _PARAMETER_NOT_FOUND,
            Name=name,
            WithDecryption=decrypt,
        )

    async def get_secret_value(
        self, secret_id: str, *, version_id: str | None, version_stage: str | None
    ) -> Mapping[str, Any]:
        """Secrets Manager GetSecretValue."""
        selector = {"VersionId": version_id, "VersionStage": version_stage}
        return await self._call(
            "secretsmanager",
            "get_secret_value",
            f"secret {secret_id}",
            _SECRET_NOT_FOUND,
            SecretId=secret_id,
            **{field: value for field, value in selector.items() if value},
        )

    async def get_item(self, table: str, key: Mapping[str, Any]) -> Mapping[str, Any]:
        """DynamoDB GetItem (strongly consistent reads are not needed for a cache)."""
        response = await self._call(
            "dynamodb", "get_item", f"item of {table}", _ITEM_NOT_FOUND, TableName=table, Key=key
        )
        item = response.get("Item")
        if not item:
            raise SourceNotFound(f"table {table} has no item with that key")
        return dict(item)

    async def aclose(self) -> None:
        """Close the shared clients of the running loop."""
        if self._clients is None:
            from polycache.loaders import _aws

            await _aws.close_clients()

    async def _call(
        self,
        service: str,
        operation: str,
        what: str,
        not_found: frozenset[str],
        **parameters: Any,
    ) -> Mapping[str, Any]:
        # AWS's errors become polycache's as in the loaders (the code, never AWS's text, which
        # can quote a value); `refusal` tells a timeout and a malformed request apart.
        from polycache.loaders._aws import translating

        clients = self._clients or _default_clients()
        try:
            async with asyncio.timeout(self._timeout):
                with translating(what, not_found=not_found):
                    client = await clients(service)
                    response: Mapping[str, Any] = await getattr(client, operation)(**parameters)
        except TimeoutError as exc:
            raise SourceTimeout(f"{what}: no answer within {self._timeout} s") from exc
        return response


# -- the sample's config.yaml ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DynamoDbItem:
    """One item the sample's `config.yaml` names, served as `/dynamodb?name=NAME`.

    Attributes:
        name: `Table-HashValue` or `Table-HashValue-SortValue`, the sample's key format.
        table: The table name.
        key: The item's key in attribute-value form (`{"pKey": {"S": "pKey1"}}`).
    """

    name: str
    table: str
    key: Mapping[str, Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class SampleConfig:
    """What the sample's `config.yaml` lists: parameter names and DynamoDB items."""

    parameters: tuple[str, ...] = ()
    items: tuple[DynamoDbItem, ...] = ()

    def item(self, name: str) -> DynamoDbItem | None:
        """The configured item called `name`, if any."""
        for item in self.items:
            if item.name == name:
                return item
        return None


def _text(entry: Mapping[str, Any], field: str, where: str, *, required: bool = True) -> str:
    value = entry.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise ConfigurationError(f"{where}: expected a string {field!r}, got {value!r}")
    return str(value)


def _key_type(entry: Mapping[str, Any], field: str, where: str) -> str:
    kind = _text(entry, field, where, required=False).upper() or "S"
    if kind not in _KEY_TYPES:
        raise ConfigurationError(f"{where}: {field} must be S, N or B, got {kind!r}")
    return kind


def _parse_sample_config(document: object, path: Path) -> SampleConfig:
    if document is None:
        return SampleConfig()
    if not isinstance(document, dict):
        raise ConfigurationError(f"{path}: expected a mapping with 'parameters' and 'dynamodb'")
    names: list[str] = []
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict) or not isinstance(parameters.get("names") or [], list):
        raise ConfigurationError(f"{path}: 'parameters' must be a mapping with a 'names' list")
    for name in parameters.get("names") or []:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{path}: parameter names must be strings, got {name!r}")
        names.append(name)
    items: list[DynamoDbItem] = []
    tables = document.get("dynamodb") or []
    if not isinstance(tables, list):
        raise ConfigurationError(f"{path}: 'dynamodb' must be a list of items")
    for index, entry in enumerate(tables):
        where = f"{path}: dynamodb[{index}]"
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{where}: expected a mapping")
        table = _text(entry, "table", where)
        hash_key = _text(entry, "hashkey", where)
        hash_value = _text(entry, "hashkeyvalue", where)
        key = {hash_key: {_key_type(entry, "hashkeytype", where): hash_value}}
        name = f"{table}-{hash_value}"
        sort_key = _text(entry, "sortkey", where, required=False)
        if sort_key:
            sort_value = _text(entry, "sortkeyvalue", where)
            key[sort_key] = {_key_type(entry, "sortkeytype", where): sort_value}
            name = f"{name}-{sort_value}"
        items.append(DynamoDbItem(name=name, table=table, key=key))
    return SampleConfig(tuple(names), tuple(items))


def load_sample_config(path: Path | None) -> SampleConfig:
    """Read the sample's `config.yaml`; a missing file is an empty configuration.

    Raises:
        ConfigurationError: The file exists but is not the sample's layout, or PyYAML is missing.
    """
    if path is None or not path.is_file():
        return SampleConfig()
    try:
        # Imported by name: PyYAML ships no type hints, and only this function needs it.
        yaml = importlib.import_module("yaml")
    except ImportError as exc:
        raise ConfigurationError(
            f"reading {path} needs PyYAML: pip install pyyaml ({exc.name} is not installed)"
        ) from exc
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read {path}: {type(exc).__name__}") from exc
    return _parse_sample_config(document, path)


# -- encoding answers --------------------------------------------------------------------------


def _json_ready(value: Any) -> Any:
    """The botocore response as JSON: times as RFC 3339 in UTC, bytes as base64."""
    if isinstance(value, datetime.datetime):
        moment = value.astimezone(datetime.UTC) if value.tzinfo else value
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(name): _json_ready(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    return value


def _encode(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _parameter_document(response: Mapping[str, Any]) -> bytes:
    parameter = {"Selector": None, "SourceResult": None, **response.get("Parameter", {})}
    return _encode({"Parameter": _json_ready(parameter), "ResultMetadata": {}})


def _secret_document(response: Mapping[str, Any]) -> bytes:
    fields = {name: value for name, value in response.items() if name != "ResponseMetadata"}
    secret = {"SecretBinary": None, "SecretString": None, **fields}
    return _encode({**_json_ready(secret), "ResultMetadata": {}})


def _plain_attribute(value: Mapping[str, Any]) -> Any:
    """One DynamoDB attribute value as the sample shows it (numbers stay strings)."""
    kind, content = next(iter(value.items()))
    if kind in ("S", "N"):
        return content
    if kind == "B":
        return _json_ready(content)
    if kind == "BOOL":
        return bool(content)
    if kind == "NULL":
        return None
    if kind in ("SS", "NS"):
        return list(content)
    if kind == "BS":
        return [_json_ready(item) for item in content]
    if kind == "L":
        return [_plain_attribute(item) for item in content]
    if kind == "M":
        return {name: _plain_attribute(item) for name, item in content.items()}
    return _json_ready(content)


def _item_document(item: Mapping[str, Any]) -> bytes:
    return _encode({name: _plain_attribute(value) for name, value in item.items()})


# -- the read-through cache --------------------------------------------------------------------


class ReadThrough:
    """A `Cache` (memory backend) in front of `Sources`, keeping encoded answers.

    Each request calls `Cache.get_or_load` with a loader made for its arguments; the cache key
    only has to tell requests apart, and its scheme is none of the built-in loaders'.

    Args:
        settings: TTLs, sizes and the source timeout.
        sources: The AWS calls.
        config: The sample's `config.yaml` (parameters to prefetch, DynamoDB items by name).
        clock: Epoch seconds; injectable for tests.
    """

    def __init__(
        self,
        settings: ExtensionSettings,
        sources: Sources,
        config: SampleConfig,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._sources = sources
        self._settings = settings
        self.config = config
        self._cache = Cache(
            MemoryBackend(settings.max_entries),
            ttl=settings.parameters_ttl,
            stale_ttl=settings.stale_ttl,
            stale_if_error=settings.stale_ttl,
            negative_ttl=settings.negative_ttl,
            clock=clock,
            environ={},
        )

    @property
    def cache(self) -> Cache:
        """The cache in front of the sources (its `stats` show hits and loads)."""
        return self._cache

    async def parameter_value(self, name: str) -> str:
        """The decrypted value of a parameter (`/parameters?name=`).

        Raises:
            SourceNotFound: There is no such parameter (remembered for `negative_ttl`).
            LoaderError: The source failed.
        """

        async def load() -> str:
            response = await self._sources.get_parameter(name, decrypt=True)
            value = response.get("Parameter", {}).get("Value")
            if not isinstance(value, str):
                raise LoaderError(f"parameter {name}: GetParameter answered without a value")
            return value

        value: str = await self._cache.get_or_load(
            f"sample-parameter:{name}", load, ttl=self._settings.parameters_ttl
        )
        return value

    async def item(self, name: str) -> bytes:
        """A configured DynamoDB item as JSON (`/dynamodb?name=`).

        Raises:
            SourceNotFound: No such item in `config.yaml` or in its table.
            LoaderError: The source failed.
        """
        item = self.config.item(name)
        if item is None:
            raise SourceNotFound(f"{name} is not an item of config.yaml")

        async def load() -> bytes:
            return _item_document(await self._sources.get_item(item.table, item.key))

        value: bytes = await self._cache.get_or_load(
            f"sample-item:{name}", load, ttl=self._settings.parameters_ttl
        )
        return value

    async def parameter(self, name: str, *, decrypt: bool) -> bytes:
        """GetParameter's answer as JSON.

        Raises:
            SourceNotFound: There is no such parameter.
            LoaderError: The source failed.
        """

        async def load() -> bytes:
            return _parameter_document(await self._sources.get_parameter(name, decrypt=decrypt))

        key = f"GetParameter:{(name, decrypt)!r}"
        value: bytes = await self._cache.get_or_load(key, load, ttl=self._settings.ssm_ttl)
        return value

    async def secret(
        self, secret_id: str, *, version_id: str | None, version_stage: str | None
    ) -> bytes:
        """GetSecretValue's answer as JSON.

        Raises:
            SourceNotFound: There is no such secret or version.
            LoaderError: The source failed.
        """

        async def load() -> bytes:
            response = await self._sources.get_secret_value(
                secret_id, version_id=version_id, version_stage=version_stage
            )
            return _secret_document(response)

        key = f"GetSecretValue:{(secret_id, version_id, version_stage)!r}"
        value: bytes = await self._cache.get_or_load(key, load, ttl=self._settings.secrets_ttl)
        return value

    async def prefetch(self) -> int:
        """Load everything the sample's config lists; returns how many failed (logged by name)."""
        loads: list[tuple[str, str, Awaitable[object]]] = [
            ("parameter", name, self.parameter_value(name)) for name in self.config.parameters
        ]
        loads += [("item", item.name, self.item(item.name)) for item in self.config.items]
        outcomes = await asyncio.gather(*(load for _, _, load in loads), return_exceptions=True)
        failed = 0
        for (what, name, _), outcome in zip(loads, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failed += 1
                reason = (
                    "not found" if isinstance(outcome, SourceNotFound) else type(outcome).__name__
                )
                logger.warning(
                    "polycache-extension: prefetch of %s %s failed: %s", what, name, reason
                )
        return failed

    async def aclose(self) -> None:
        """Stop background refreshes and close the sources' clients."""
        await self._cache.aclose()
        await self._sources.aclose()
