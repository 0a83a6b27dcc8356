"""The records (Entry, Loaded, Settings, Stats) behave as the frozen slotted dataclasses they were.

Each record is compared with a `@dataclass(frozen=True, slots=True)` twin built from the same
fields: constructor, defaults, repr, equality, hash, pattern matching, copying, pickling and
the refusal to change.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest

from polycache import Entry, Loaded, Settings, Stats
from polycache._config import DEFAULTS

# (record, its fields in constructor order, their defaults, arguments for a sample instance)
RECORDS: list[tuple[type[Any], tuple[str, ...], dict[str, Any], tuple[Any, ...]]] = [
    (
        Entry,
        ("value", "fresh_until", "stale_until", "expires_at", "validator", "negative"),
        {"validator": None, "negative": False},
        (("a", 1), 10.0, 20.0, 30.0, '"etag"', False),
    ),
    (Loaded, ("value", "validator", "modified"), {"validator": None, "modified": True}, (b"x",)),
    (
        Settings,
        (
            "backend",
            "ttl",
            "stale_ttl",
            "stale_if_error",
            "negative_ttl",
            "backend_timeout",
            "load_timeout",
            "ttl_jitter",
            "lease_wait",
            "disabled",
        ),
        {},
        ("memory://", 300.0, 0.0, 0.0, 30.0, 1.0, None, 0.1, 2.0, False),
    ),
    (
        Stats,
        (
            "hits",
            "misses",
            "stale_hits",
            "loads",
            "load_errors",
            "load_timeouts",
            "lease_waits",
            "backend_errors",
            "backend_skipped",
            "uncached",
            "breaker",
        ),
        {
            "hits": 0,
            "misses": 0,
            "stale_hits": 0,
            "loads": 0,
            "load_errors": 0,
            "load_timeouts": 0,
            "lease_waits": 0,
            "backend_errors": 0,
            "backend_skipped": 0,
            "uncached": 0,
            "breaker": "closed",
        },
        (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, "open"),
    ),
]


def twin(record: type[Any], fields: tuple[str, ...], defaults: dict[str, Any]) -> type[Any]:
    """The frozen slotted dataclass the record stands in for."""
    specs = [
        (name, Any, dataclasses.field(default=defaults[name])) if name in defaults else (name, Any)
        for name in fields
    ]
    return dataclasses.make_dataclass(record.__name__, specs, frozen=True, slots=True)


@pytest.mark.parametrize(("record", "fields", "defaults", "sample"), RECORDS)
def test_record_behaves_as_its_frozen_dataclass_twin(
    record: type[Any], fields: tuple[str, ...], defaults: dict[str, Any], sample: tuple[Any, ...]
) -> None:
    reference = twin(record, fields, defaults)
    positional, expected = record(*sample), reference(*sample)
    keyword = record(**dict(zip(fields, sample, strict=False)))

    assert record.__match_args__ == reference.__match_args__ == fields
    assert set(record.__slots__) == set(fields)
    assert repr(positional) == repr(expected)
    assert positional == keyword
    assert hash(positional) == hash(keyword) == hash(expected)
    assert positional != expected  # another class, as for two dataclasses
    assert positional != sample
    assert not hasattr(positional, "__dict__")
    for name in fields:
        assert getattr(positional, name) == getattr(expected, name)

    for changed in (copy.copy(positional), pickle.loads(pickle.dumps(positional))):
        assert type(changed) is record
        assert changed == positional
    assert copy.deepcopy(positional) == positional

    for name in (*fields, "unknown"):
        with pytest.raises(
            dataclasses.FrozenInstanceError, match=f"cannot assign to field '{name}'"
        ):
            setattr(positional, name, 1)
        with pytest.raises(dataclasses.FrozenInstanceError, match=f"cannot delete field '{name}'"):
            delattr(positional, name)
        with pytest.raises(AttributeError):
            setattr(positional, name, 1)


@pytest.mark.parametrize(("record", "fields", "defaults", "sample"), RECORDS)
def test_record_defaults_and_missing_arguments(
    record: type[Any], fields: tuple[str, ...], defaults: dict[str, Any], sample: tuple[Any, ...]
) -> None:
    reference = twin(record, fields, defaults)
    required = [name for name in fields if name not in defaults]
    arguments = dict(zip(fields, sample, strict=False))
    given = {name: arguments[name] for name in required}
    assert repr(record(**given)) == repr(reference(**given))
    if required:
        with pytest.raises(TypeError):
            record(**dict(list(given.items())[:-1]))
    with pytest.raises(TypeError):
        record(*sample, *([None] * (len(fields) - len(sample))), None)
    with pytest.raises(TypeError):
        record(**given, unknown=1)


def test_records_unequal_by_any_field_and_match_by_position() -> None:
    entry = Entry("v", 1.0, 2.0, 3.0)
    assert entry != Entry("v", 1.0, 2.0, 3.0, negative=True)
    assert entry == Entry("v", 1.0, 2.0, 3.0, None, False)
    assert {entry: 1}[Entry("v", 1.0, 2.0, 3.0)] == 1
    match Loaded(b"x", '"e"'):
        case Loaded(value, validator, modified=True):
            assert (value, validator) == (b"x", '"e"')
        case _:
            pytest.fail("Loaded did not match by position")
    assert DEFAULTS.backend == "memory://"
    assert Stats().breaker == "closed"
    with pytest.raises(TypeError, match="unhashable"):
        hash(Entry([1], 1.0, 2.0, 3.0))
