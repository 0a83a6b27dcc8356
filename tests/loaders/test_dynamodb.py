"""DynamoDB through the Cache, against moto: learned key types, plain numbers, batches."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from polycache import Cache, ConfigurationError, LoaderError, SourceNotFound
from polycache.loaders import _aws
from polycache.loaders.dynamodb import DynamoDbLoader
from tests.conftest import FakeClock
from tests.loaders.conftest import clients_returning
from tests.stand_ins.moto_server import CountingMotoServer

pytestmark = pytest.mark.moto


def create_table(
    boto: Any, name: str, key: dict[str, str], sort: tuple[str, str] | None = None
) -> None:
    ((hash_name, hash_type),) = key.items()
    schema = [{"AttributeName": hash_name, "KeyType": "HASH"}]
    definitions = [{"AttributeName": hash_name, "AttributeType": hash_type}]
    if sort is not None:
        schema.append({"AttributeName": sort[0], "KeyType": "RANGE"})
        definitions.append({"AttributeName": sort[0], "AttributeType": sort[1]})
    boto("dynamodb").create_table(
        TableName=name,
        KeySchema=schema,
        AttributeDefinitions=definitions,
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.fixture
def tables(aws: CountingMotoServer, boto: Any) -> Any:
    dynamodb = boto("dynamodb")
    create_table(boto, "users", {"id": "N"})
    create_table(boto, "sessions", {"token": "S"})
    create_table(boto, "orders", {"customer": "N"}, sort=("order", "S"))
    dynamodb.put_item(
        TableName="users",
        Item={
            "id": {"N": "42"},
            "name": {"S": "Ann"},
            "score": {"N": "97.5"},
            "visits": {"N": "12"},
            "admin": {"BOOL": True},
            "tags": {"SS": ["b", "a"]},
            "profile": {"M": {"age": {"N": "33"}, "langs": {"L": [{"S": "en"}, {"N": "2"}]}}},
            "nothing": {"NULL": True},
        },
    )
    dynamodb.put_item(TableName="sessions", Item={"token": {"S": "abc"}, "user": {"N": "42"}})
    dynamodb.put_item(
        TableName="orders",
        Item={"customer": {"N": "7"}, "order": {"S": "2024-01"}, "total": {"N": "19.99"}},
    )
    aws.clear_calls()
    return dynamodb


async def test_items_come_back_as_plain_python(
    aws: CountingMotoServer, tables: Any, clock: FakeClock
) -> None:
    cache = Cache(ttl=60, clock=clock)

    user = await cache.get("dynamodb://users?id=42")

    assert user == {
        "id": 42,
        "name": "Ann",
        "score": 97.5,
        "visits": 12,
        "admin": True,
        "tags": ["a", "b"],
        "profile": {"age": 33, "langs": ["en", 2]},
        "nothing": None,
    }
    assert type(user["id"]) is int
    assert type(user["score"]) is float
    assert not any(isinstance(value, Decimal) for value in user.values())
    for _ in range(5):
        await cache.get("dynamodb://users?id=42")
    assert aws.count("dynamodb.GetItem") == 1


async def test_key_types_guessed_from_the_key_cost_no_describe(
    aws: CountingMotoServer, tables: Any, clock: FakeClock
) -> None:
    cache = Cache(ttl=60, clock=clock)

    assert (await cache.get("dynamodb://sessions?token=abc"))["user"] == 42
    assert (await cache.get("dynamodb://users?id=42"))["name"] == "Ann"
    assert await cache.get("dynamodb://users?id=43") is None
    assert await cache.get("dynamodb://users?id=44") is None
    order = await cache.get("dynamodb://orders?order=2024-01&customer=7")
    assert order == {"customer": 7, "order": "2024-01", "total": 19.99}

    assert aws.count("dynamodb.DescribeTable") == 0
    assert aws.count("dynamodb.GetItem") == 5


async def test_a_wrong_guess_is_corrected_once_per_table(
    aws: CountingMotoServer, tables: Any, boto: Any, clock: FakeClock
) -> None:
    # A string key that looks like a number: the guess (N) is refused, the table is described.
    create_table(boto, "codes", {"code": "S"})
    boto("dynamodb").put_item(TableName="codes", Item={"code": {"S": "007"}, "agent": {"S": "JB"}})
    boto("dynamodb").put_item(TableName="codes", Item={"code": {"S": "8"}, "agent": {"S": "M"}})
    aws.clear_calls()
    loader = DynamoDbLoader()

    assert await loader("codes?code=007") == {"code": "007", "agent": "JB"}
    assert aws.count("dynamodb.DescribeTable") == 1
    assert aws.count("dynamodb.GetItem") == 2
    # Learned: the next read of that table is one GetItem with the right type.
    assert await loader("codes?code=8") == {"code": "8", "agent": "M"}
    assert aws.count("dynamodb.DescribeTable") == 1
    assert aws.count("dynamodb.GetItem") == 3
    # A sort key left out: described, and named.
    with pytest.raises(LoaderError, match=r"keyed by \['customer', 'order'\], got \['customer'\]"):
        await loader("orders?customer=7")


async def test_a_missing_item_is_not_found_and_remembered(
    aws: CountingMotoServer, tables: Any, clock: FakeClock
) -> None:
    cache = Cache(ttl=60, negative_ttl=30, clock=clock)
    assert await cache.get("dynamodb://users?id=1000", "nobody") == "nobody"
    assert await cache.get("dynamodb://users?id=1000", "nobody") == "nobody"
    assert aws.count("dynamodb.GetItem") == 1
    with pytest.raises(SourceNotFound, match="no such item") as raised:
        await DynamoDbLoader()("users?id=1000")
    assert str(raised.value) == "DynamoDB item 'users?id=1000' not found (no such item)"


async def test_projection_and_consistent_read(aws: CountingMotoServer, tables: Any) -> None:
    recorded: list[tuple[str, dict[str, Any]]] = []

    class Spy:
        def __init__(self, client: Any) -> None:
            self.client = client

        def __getattr__(self, operation: str) -> Any:
            method = getattr(self.client, operation)

            async def call(**arguments: Any) -> Any:
                recorded.append((operation, arguments))
                return await method(**arguments)

            return call

    async def spying(service: str) -> Any:
        return Spy(await _aws.client(service))

    loader = DynamoDbLoader(consistent_read=True, attribute="name", clients=spying)

    assert await loader("users?id=42") == "Ann"
    assert await loader("users?id=42#score") == 97.5
    with pytest.raises(SourceNotFound, match="has no 'missing'"):
        await loader("users?id=42#missing")
    gets = [arguments for operation, arguments in recorded if operation == "get_item"]
    assert all(arguments["ConsistentRead"] is True for arguments in gets)
    assert [arguments["ExpressionAttributeNames"] for arguments in gets] == [
        {"#a": "name"},
        {"#a": "score"},
        {"#a": "missing"},
    ]
    batch = await loader.load_many(["users?id=42", "users?id=42#visits", "users?id=9"])
    assert batch == {"users?id=42": "Ann", "users?id=42#visits": 12}


async def test_get_many_batches_a_hundred_keys_a_call(
    aws: CountingMotoServer, boto: Any, tables: Any, clock: FakeClock
) -> None:
    for index in range(150):
        tables.put_item(
            TableName="users", Item={"id": {"N": str(1000 + index)}, "n": {"N": str(index)}}
        )
    aws.clear_calls()
    cache = Cache(ttl=60, clock=clock)
    keys = [f"dynamodb://users?id={1000 + index}" for index in range(150)]

    values = await cache.get_many([*keys, "dynamodb://users?id=5", "dynamodb://sessions?token=abc"])

    assert values["dynamodb://users?id=5"] is None
    assert values["dynamodb://sessions?token=abc"] == {"token": "abc", "user": 42}
    assert [values[key]["n"] for key in keys] == list(range(150))
    assert aws.count("dynamodb.BatchGetItem") == 3
    assert aws.count("dynamodb.GetItem") == 0


async def test_unprocessed_keys_are_retried() -> None:
    users = {
        "Table": {
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "N"}],
        }
    }

    class Throttled:
        def __init__(self) -> None:
            self.batches: list[dict[str, Any]] = []

        async def describe_table(self, **arguments: Any) -> Any:
            return users

        async def batch_get_item(self, RequestItems: dict[str, Any]) -> Any:  # noqa: N803 - AWS's name
            self.batches.append(RequestItems)
            keys = RequestItems["users"]["Keys"]
            first, rest = keys[:1], keys[1:]
            return {
                "Responses": {"users": [{**key, "v": {"S": key["id"]["N"]}} for key in first]},
                "UnprocessedKeys": {"users": {**RequestItems["users"], "Keys": rest}}
                if rest
                else {},
            }

    client = Throttled()
    loader = DynamoDbLoader(clients=clients_returning(client))

    values = await loader.load_many(["users?id=1", "users?id=2", "users?id=3"])

    assert values == {f"users?id={n}": {"id": n, "v": str(n)} for n in (1, 2, 3)}
    assert [len(batch["users"]["Keys"]) for batch in client.batches] == [3, 2, 1]


async def test_bad_keys_are_named(aws: CountingMotoServer, tables: Any) -> None:
    cache = Cache(ttl=60)
    with pytest.raises(LoaderError, match=r"keyed by \['id'\], got \['name'\]"):
        await cache.get("dynamodb://users?name=Ann")
    with pytest.raises(LoaderError, match="number key, got 'abc'"):
        await cache.get("dynamodb://users?id=abc")
    with pytest.raises(LoaderError, match="ResourceNotFoundException") as raised:
        await cache.get("dynamodb://no_such_table?id=1")
    assert not isinstance(raised.value, SourceNotFound)
    with pytest.raises(ConfigurationError, match=r"table\?attr=value"):
        await DynamoDbLoader()("users")
    with pytest.raises(ConfigurationError, match="consistent_read"):
        DynamoDbLoader(consistent_read=1)  # type: ignore[arg-type]


async def test_a_table_is_described_once_and_a_cancelled_describer_is_replaced() -> None:
    import asyncio

    described = asyncio.Event()
    release = asyncio.Event()

    class Slow:
        def __init__(self) -> None:
            self.describes = 0

        async def describe_table(self, **arguments: Any) -> Any:
            self.describes += 1
            described.set()
            await release.wait()
            return {
                "Table": {
                    "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                    "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
                }
            }

        async def batch_get_item(self, RequestItems: dict[str, Any]) -> Any:  # noqa: N803 - AWS's name
            keys = RequestItems["users"]["Keys"]
            return {"Responses": {"users": [{**key, "v": {"S": "x"}} for key in keys]}}

    client = Slow()
    loader = DynamoDbLoader(clients=clients_returning(client))
    first = asyncio.ensure_future(loader.load_many(["users?id=1"]))
    await described.wait()
    joiners = [asyncio.ensure_future(loader.load_many([f"users?id={n}"])) for n in (2, 3)]
    await asyncio.sleep(0.01)
    first.cancel()  # the describer goes; one joiner describes again, the other waits for it
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*joiners)
    assert results == [{f"users?id={n}": {"id": str(n), "v": "x"}} for n in (2, 3)]
    assert client.describes == 2
    assert first.cancelled()
    assert await loader.load_many(["users?id=4"]) == {"users?id=4": {"id": "4", "v": "x"}}
    assert client.describes == 2  # learned for good
