"""`DynamoDbLoader`: items from Amazon DynamoDB (`dynamodb://table?attr=value` keys).

| key | call | value |
|---|---|---|
| `dynamodb://users?id=42` | GetItem on the table's key | the item as a `dict` of plain Python |
| `dynamodb://orders?customer=7&order=2024-01` | GetItem (partition and sort key) | as above |
| `dynamodb://users?id=42#email` | GetItem projecting one attribute | that attribute's value |

The key's attribute types are guessed from the key on a table's first read (`42` is a number,
`user-42` a string) and kept once DynamoDB accepts them; only when it rejects the guess is the
table described (DescribeTable, once per table), so `id=42` works whether `id` is a string or a
number, and the usual first read costs one GetItem, as in Powertools. Numbers come back as
`int` or `float`, never `Decimal`; sets as sorted lists.
`Cache.get_many` loads in batches of one hundred keys (BatchGetItem, unprocessed keys retried).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from polycache._errors import ConfigurationError, LoaderError, SourceNotFound
from polycache._extras import require_extra
from polycache._flight import Flights
from polycache.loaders import _aws
from polycache.loaders._transform import Transform, apply_transform, check_transform

__all__ = ["DynamoDbLoader"]

_NOT_FOUND: Final = frozenset[str]()
# DynamoDB's answer to a key whose attributes or types do not match the table's key schema.
_SCHEMA_MISMATCH: Final = "ValidationException"
_BATCH_SIZE: Final = 100
_UNPROCESSED_ATTEMPTS: Final = 6
_UNPROCESSED_BACKOFF: Final = 0.05


@dataclass(frozen=True, slots=True)
class _ItemName:
    """A parsed name: the table, its key attributes as given, and an optional attribute."""

    table: str
    key: tuple[tuple[str, str], ...]
    attribute: str | None


def _parse(name: str) -> _ItemName:
    if not isinstance(name, str):
        raise ConfigurationError(f"DynamoDbLoader needs a str name, got {name!r}")
    rest, _, attribute = name.partition("#")
    table, _, query = rest.partition("?")
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if not table or not pairs:
        raise ConfigurationError(
            f"DynamoDbLoader needs a name like table?attr=value[&attr2=value2], got {name!r}"
        )
    names = [field for field, _ in pairs]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"DynamoDB item {name!r}: a key attribute is given twice")
    return _ItemName(table, tuple(pairs), urllib.parse.unquote(attribute) or None)


def _number(text: str) -> int | float:
    if "." in text or "e" in text.lower():
        return float(text)
    return int(text)


def _plain(value: Mapping[str, Any]) -> Any:
    """One DynamoDB attribute value (`{"N": "42"}`) as plain Python."""
    kind, content = next(iter(value.items()))
    if kind == "S":
        return content
    if kind == "N":
        return _number(content)
    if kind == "B":
        return bytes(content)
    if kind == "BOOL":
        return bool(content)
    if kind == "NULL":
        return None
    if kind == "M":
        return {field: _plain(item) for field, item in content.items()}
    if kind == "L":
        return [_plain(item) for item in content]
    # Sets become sorted lists, so that an item survives a JSON backend unchanged.
    if kind == "SS":
        return sorted(content)
    if kind == "NS":
        return sorted(_number(item) for item in content)
    if kind == "BS":
        return sorted(bytes(item) for item in content)
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def _fingerprint(kind: str, text_or_bytes: Any) -> Any:
    # DynamoDB normalises numbers ("042" is 42): compare keys the way it does.
    if kind == "N":
        return Decimal(text_or_bytes).normalize()
    if kind == "B":
        return bytes(text_or_bytes)
    return text_or_bytes


class DynamoDbLoader:
    """Loads `dynamodb://table?attr=value` keys from DynamoDB (the built-in loader).

    Args:
        consistent_read: Use strongly consistent reads (twice the read capacity).
        attribute: Return only this attribute of each item (a projection); a key's own
            `#attribute` suffix takes precedence.
        transform: `"json"`, `"binary"` or `"auto"` applied to a projected attribute's value.
        clients: Returns the client for a service name; defaults to polycache's shared
            botocore clients. Inject one to use your own session or a test double.

    Example:
        ```python
        cache.register_loader("flags", DynamoDbLoader(consistent_read=True, attribute="on"))
        enabled = await cache.get("flags://feature-flags?name=new-checkout")
        ```
    """

    __slots__ = (
        "_attribute",
        "_clients",
        "_consistent_read",
        "_learning",
        "_schemas",
        "_transform",
    )

    def __init__(
        self,
        *,
        consistent_read: bool = False,
        attribute: str | None = None,
        transform: Transform | None = None,
        clients: _aws.ClientFactory | None = None,
    ) -> None:
        if not isinstance(consistent_read, bool):
            raise ConfigurationError(f"consistent_read must be a bool, got {consistent_read!r}")
        if attribute is not None and (not isinstance(attribute, str) or not attribute):
            raise ConfigurationError(
                f"attribute must be a non-empty str or None, got {attribute!r}"
            )
        if clients is None:
            require_extra("the dynamodb: loader", "aws", "botocore")
        self._consistent_read = consistent_read
        self._attribute = attribute
        self._transform = check_transform(transform)
        self._clients = _aws.client_factory(clients)
        # Table -> its key schema (attribute -> S, N or B), learned once (from a guess DynamoDB
        # accepted, or described); and the descriptions in flight, shared by concurrent callers.
        # A flight belongs to the loop it started on, so the loop is part of its key.
        self._schemas: dict[str, dict[str, str]] = {}
        self._learning: Flights[tuple[str, asyncio.AbstractEventLoop], dict[str, str]] = Flights()

    def __repr__(self) -> str:
        return (
            f"DynamoDbLoader(consistent_read={self._consistent_read}, "
            f"attribute={self._attribute!r}, transform={self._transform!r})"
        )

    async def __call__(self, name: str) -> Any:
        """Load one item (or one attribute of it).

        Args:
            name: `table?attr=value[&attr2=value2][#attribute]`.

        Raises:
            SourceNotFound: No such item, or the item has not got the projected attribute.
            LoaderError: The key does not match the table's key schema, the table does not
                exist, or any other failure, naming the item and the AWS error code.
            ConfigurationError: A name that is not `table?attr=value`.
        """
        parsed = _parse(name)
        what = _what(name)
        schema = self._schemas.get(parsed.table)
        guessed = schema is None
        if schema is None:
            schema = _guessed_schema(parsed)
        attribute = parsed.attribute or self._attribute
        arguments: dict[str, Any] = {
            "TableName": parsed.table,
            "Key": _item_key(parsed, schema, what),
            "ConsistentRead": self._consistent_read,
        }
        if attribute is not None:
            arguments["ProjectionExpression"] = "#a"
            arguments["ExpressionAttributeNames"] = {"#a": attribute}
        client = await self._clients("dynamodb")
        try:
            response = await client.get_item(**arguments)
        except Exception as exc:
            if not guessed or _aws.error_code(exc) != _SCHEMA_MISMATCH:
                raise _aws.translate_error(exc, what, not_found=_NOT_FOUND) from exc
            # The guess was wrong (a string key that looks like a number, a sort key left out):
            # ask the table, then read again with its own schema.
            described = await self._schema(parsed.table, what)
            if described == schema:
                raise _aws.translate_error(exc, what, not_found=_NOT_FOUND) from exc
            arguments["Key"] = _item_key(parsed, described, what)
            with _aws.translating(what, not_found=_NOT_FOUND):
                response = await client.get_item(**arguments)
        else:
            if guessed:
                # DynamoDB validates the key against the schema: accepted means learned.
                self._schemas.setdefault(parsed.table, schema)
        item = response.get("Item")
        if item is None:
            raise SourceNotFound(f"{what} not found (no such item)")
        return self._value(item, attribute, name)

    async def load_many(self, names: Sequence[str]) -> Mapping[str, Any]:
        """Load several items with BatchGetItem, a hundred keys a call.

        Returns:
            A mapping from name to value or to the error of that name; a name the source does
            not have is absent (or maps to `SourceNotFound`).
        """
        results: dict[str, Any] = {}
        # (table, attribute) -> key fingerprint -> the names of that item.
        groups: dict[tuple[str, str | None], dict[Any, list[str]]] = {}
        for name in names:
            try:
                parsed = _parse(name)
                what = _what(name)
                item_key = _item_key(parsed, await self._schema(parsed.table, what), what)
            except Exception as exc:  # reported per name, never sinking the batch
                results[name] = exc
                continue
            attribute = parsed.attribute or self._attribute
            group = groups.setdefault((parsed.table, attribute), {})
            fingerprint = _key_fingerprint(item_key)
            if fingerprint not in group:
                group[fingerprint] = []
            group[fingerprint].append(name)
        calls = []
        for (table, attribute), group in groups.items():
            schema = await self._schema(table, f"DynamoDB table {table!r}")
            keys = [_key_from_fingerprint(fingerprint) for fingerprint in group]
            for start in range(0, len(keys), _BATCH_SIZE):
                chunk = keys[start : start + _BATCH_SIZE]
                calls.append(self._load_chunk(table, attribute, schema, chunk, group))
        for outcome in await asyncio.gather(*calls):
            results.update(outcome)
        return results

    async def _load_chunk(
        self,
        table: str,
        attribute: str | None,
        schema: Mapping[str, str],
        chunk: list[dict[str, Any]],
        group: Mapping[Any, list[str]],
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"Keys": chunk, "ConsistentRead": self._consistent_read}
        if attribute is not None:
            # The key attributes come back too, so that each item finds its name.
            fields = list(dict.fromkeys([*schema, attribute]))
            request["ProjectionExpression"] = ", ".join(f"#a{i}" for i in range(len(fields)))
            request["ExpressionAttributeNames"] = {
                f"#a{i}": field for i, field in enumerate(fields)
            }
        items: list[Mapping[str, Any]] = []
        failure: Exception | None = None
        try:
            await self._batch_get(table, request, items)
        except Exception as exc:  # the chunk's error belongs to each of its names not yet read
            failure = exc
        results: dict[str, Any] = {}
        for item in items:
            item_key = {field: item[field] for field in schema if field in item}
            for name in group.get(_key_fingerprint(item_key), []):
                results[name] = self._guarded_value(item, attribute, name)
        if failure is not None:
            for item_key in chunk:
                for name in group.get(_key_fingerprint(item_key), []):
                    if name not in results:
                        results[name] = _aws.translate_error(
                            failure, _what(name), not_found=_NOT_FOUND
                        )
        return results

    async def _batch_get(
        self, table: str, request: dict[str, Any], items: list[Mapping[str, Any]]
    ) -> None:
        """BatchGetItem into `items`, retrying unprocessed keys with backoff."""
        client = await self._clients("dynamodb")
        pending: dict[str, Any] = {table: request}
        for attempt in range(_UNPROCESSED_ATTEMPTS):
            if attempt:
                await asyncio.sleep(_UNPROCESSED_BACKOFF * 2 ** (attempt - 1))
            response = await client.batch_get_item(RequestItems=pending)
            items.extend(response.get("Responses", {}).get(table, []))
            pending = response.get("UnprocessedKeys") or {}
            if not pending:
                return
        raise _Unprocessed()

    def _guarded_value(self, item: Mapping[str, Any], attribute: str | None, name: str) -> Any:
        try:
            return self._value(item, attribute, name)
        except Exception as exc:  # one bad value, not the batch
            return exc

    def _value(self, item: Mapping[str, Any], attribute: str | None, name: str) -> Any:
        if attribute is None:
            return {field: _plain(value) for field, value in item.items()}
        what = _what(name)
        if attribute not in item:
            raise SourceNotFound(f"{what} not found (the item has no {attribute!r})")
        return apply_transform(_plain(item[attribute]), self._transform, name=attribute, what=what)

    async def _schema(self, table: str, what: str) -> dict[str, str]:
        schema = self._schemas.get(table)
        if schema is not None:
            return schema
        return await self._learning.run(
            (table, asyncio.get_running_loop()), lambda: self._learn(table, what)
        )

    async def _learn(self, table: str, what: str) -> dict[str, str]:
        schema = await self._describe(table, what)
        self._schemas[table] = schema
        return schema

    async def _describe(self, table: str, what: str) -> dict[str, str]:
        client = await self._clients("dynamodb")
        with _aws.translating(what, not_found=_NOT_FOUND):
            response = await client.describe_table(TableName=table)
        description = response["Table"]
        types = {
            definition["AttributeName"]: definition["AttributeType"]
            for definition in description.get("AttributeDefinitions", [])
        }
        return {
            element["AttributeName"]: types.get(element["AttributeName"], "S")
            for element in description["KeySchema"]
        }


def _what(name: str) -> str:
    return f"DynamoDB item {name!r}"


def _guessed_schema(parsed: _ItemName) -> dict[str, str]:
    """The key schema the name suggests: a value that reads as a number is a number."""
    schema: dict[str, str] = {}
    for field, text in parsed.key:
        try:
            number = Decimal(text)
        except InvalidOperation:
            number = None
        schema[field] = "N" if number is not None and number.is_finite() else "S"
    return schema


def _item_key(parsed: _ItemName, schema: Mapping[str, str], what: str) -> dict[str, Any]:
    given = dict(parsed.key)
    if set(given) != set(schema):
        raise LoaderError(
            f"{what}: table {parsed.table!r} is keyed by {sorted(schema)}, got {sorted(given)}"
        )
    item_key: dict[str, Any] = {}
    for field, kind in schema.items():
        text = given[field]
        if kind == "N":
            try:
                Decimal(text)
            except InvalidOperation:
                raise LoaderError(f"{what}: {field} is a number key, got {text!r}") from None
            item_key[field] = {"N": text}
        elif kind == "B":
            try:
                item_key[field] = {"B": base64.b64decode(text, validate=True)}
            except (binascii.Error, ValueError):
                raise LoaderError(
                    f"{what}: {field} is a binary key, expected base64, got {text!r}"
                ) from None
        else:
            item_key[field] = {"S": text}
    return item_key


class _Unprocessed(Exception):  # noqa: N818 - named after the AWS field it reports
    """BatchGetItem left keys unprocessed after every retry (the table is throttled)."""

    def __init__(self) -> None:
        super().__init__("UnprocessedKeys")
        self.response = {"Error": {"Code": "UnprocessedKeys"}}
        self.operation_name = "BatchGetItem"


def _key_fingerprint(item_key: Mapping[str, Mapping[str, Any]]) -> tuple[Any, ...]:
    return tuple(
        sorted(
            (field, kind, _fingerprint(kind, content))
            for field, value in item_key.items()
            for kind, content in value.items()
        )
    )


def _key_from_fingerprint(fingerprint: tuple[Any, ...]) -> dict[str, Any]:
    item_key: dict[str, Any] = {}
    for field, kind, content in fingerprint:
        if kind == "N":
            item_key[field] = {"N": format(content, "f")}
        else:
            item_key[field] = {kind: content}
    return item_key
