"""JSON by default (str and bytes exactly), pickle only when asked for."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polycache import JsonSerializer, PickleSerializer, SerializationError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.text() | st.binary() | json_values)
def test_json_round_trips_exactly(value: object) -> None:
    serializer = JsonSerializer()
    back = serializer.loads(serializer.dumps(value))
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ((1, 2), "tuple"),
        ({1: "a"}, "key 1"),
        ({"a": [b"x"]}, "bytes at value['a'][0]"),
        (object(), "object"),
        ({1, 2}, "set"),
    ],
)
def test_json_refuses_what_it_cannot_give_back(value: object, named: str) -> None:
    with pytest.raises(SerializationError, match="pickle") as caught:
        JsonSerializer().dumps(value)
    assert named in str(caught.value)


def test_json_refuses_nan() -> None:
    with pytest.raises(SerializationError):
        JsonSerializer().dumps({"x": math.nan})


@pytest.mark.parametrize("data", [b"", b"?junk", b"j{not json", b"s\xff\xfe" + b"\xc3"])
def test_unreadable_bytes_are_a_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError):
        JsonSerializer().loads(data)


def test_json_does_not_unpickle() -> None:
    pickled = PickleSerializer().dumps((1, 2))
    with pytest.raises(SerializationError, match="does not read"):
        JsonSerializer().loads(pickled)


def test_pickle_round_trips_other_types() -> None:
    serializer = PickleSerializer()
    for value in [(1, 2), {1: "a"}, {1, 2}, "text", b"raw"]:
        assert serializer.loads(serializer.dumps(value)) == value
    with pytest.raises(SerializationError, match="cannot pickle"):
        serializer.dumps(lambda: None)
