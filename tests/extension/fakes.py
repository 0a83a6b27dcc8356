"""Test doubles for the extension's collaborators."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

from polycache import LoaderError, SourceNotFound
from polycache.extension._sources import SourceRejected, SourceTimeout

CREATED = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC)


class FakeSources:
    """In-memory `Sources`: parameters, secrets and items by name, with call counts.

    A value that is an exception instance is raised instead of returned.
    """

    def __init__(self, *, delay: float = 0.0) -> None:
        self.parameters: dict[str, Any] = {}
        self.secrets: dict[str, Any] = {}
        self.items: dict[str, Any] = {}
        self.calls: list[tuple[str, str]] = []
        self.delay = delay
        self.closed = False

    async def _answer(self, kind: str, name: str, table: Mapping[str, Any]) -> Any:
        self.calls.append((kind, name))
        if self.delay:
            await asyncio.sleep(self.delay)
        value = table.get(name)
        if value is None:
            raise SourceNotFound(f"{kind} {name} not found")
        if isinstance(value, BaseException):
            raise value
        return value

    async def get_parameter(self, name: str, *, decrypt: bool) -> Mapping[str, Any]:
        value = await self._answer("parameter", name, self.parameters)
        shown = value if decrypt or not value.startswith("secure:") else "ENCRYPTED"
        return {
            "Parameter": {
                "Name": name.split(":")[0],
                "Type": "SecureString" if value.startswith("secure:") else "String",
                "Value": shown,
                "Version": 1,
                "LastModifiedDate": CREATED,
                "ARN": f"arn:aws:ssm:us-east-1:123456789012:parameter{name}",
                "DataType": "text",
            },
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }

    async def get_secret_value(
        self, secret_id: str, *, version_id: str | None, version_stage: str | None
    ) -> Mapping[str, Any]:
        value = await self._answer("secret", secret_id, self.secrets)
        response: dict[str, Any] = {
            "ARN": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{secret_id}-AbCdEf",
            "Name": secret_id,
            "VersionId": version_id or "11111111-2222-3333-4444-555555555555",
            "VersionStages": [version_stage or "AWSCURRENT"],
            "CreatedDate": CREATED,
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }
        if isinstance(value, bytes):
            response["SecretBinary"] = value
        else:
            response["SecretString"] = value
        return response

    async def get_item(self, table: str, key: Mapping[str, Any]) -> Mapping[str, Any]:
        name = table + "".join(f"-{next(iter(value.values()))}" for value in key.values())
        item: Mapping[str, Any] = await self._answer("item", name, self.items)
        return item

    async def aclose(self) -> None:
        self.closed = True


__all__ = ["CREATED", "FakeSources", "LoaderError", "SourceRejected", "SourceTimeout"]
