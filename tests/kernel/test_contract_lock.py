"""The contracts' lock: the committed contracts.lock.json is what the registry says, and
the check refuses each kind of breaking change to a published version, naming the field,
the message and the consumers it breaks, while a compatible change passes."""

from __future__ import annotations

import copy
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field, create_model

from apps.orders import contracts as orders
from waybill import contractlock
from waybill.messages import Message

ROOT = Path(__file__).resolve().parents[2]
PLACED = orders.OrderPlaced.message_type


def _lock_command(*args: str) -> subprocess.CompletedProcess:
    # In a process of its own: the registry there is the platform's alone (this one also
    # holds what other test modules register).
    return subprocess.run([sys.executable, "manage.py", "contracts_lock", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_the_committed_lock_is_what_the_registry_says():
    checked = _lock_command("--check")
    assert checked.returncode == 0, f"contracts.lock.json is not the registry's:\n{checked.stdout}{checked.stderr}"


def _with_placed_as(schema: type[Message]) -> dict:
    """The registry as it is, with orders.order_placed v1's schema replaced by ``schema``."""
    registry = contractlock.locked_schemas()
    edited = copy.deepcopy(registry)
    edited[PLACED]["1"]["schema"] = schema.model_json_schema()
    return contractlock.changes(registry, edited)


class _Money(Message):
    amount: Decimal
    currency: str


class _LineInCents(Message):
    sku: str
    name: str
    quantity: int = Field(ge=1)
    unit_price: int


def _placed_edited(*, drop: tuple[str, ...] = (), **fields) -> type[Message]:
    """orders.order_placed v1's schema with ``drop`` removed and ``fields`` added or replaced."""
    kept = {name: (field.annotation, field) for name, field in orders.OrderPlacedV1.model_fields.items()
            if name not in drop and name not in fields}
    return create_model("OrderPlacedEdited", __base__=Message, **kept, **fields)


@pytest.mark.parametrize(("edited", "expected"), [
    (_placed_edited(drop=("reason",)), "field 'reason': removed"),
    (_placed_edited(customer_id=(str, ...)), "field 'customer_id': retyped from integer to string"),
    (_placed_edited(total=(_Money, ...)), "field 'total': retyped from number or string to object"),
    (_placed_edited(lines=(list[_LineInCents], Field(min_length=1))),
     "field 'lines[].unit_price': retyped from number or string to integer"),
    (_placed_edited(channel=(str, ...)), "field 'channel': a new required field"),
    (_placed_edited(reason=(str, ...)), "field 'reason': made required"),
], ids=["removed", "retyped", "retyped-to-an-object", "retyped-inside-a-list", "new-required", "made-required"])
def test_each_breaking_change_is_refused_naming_the_field_the_message_and_its_consumers(edited, expected):
    breaking = [change for change in _with_placed_as(edited) if change.breaking]
    assert [str(change) for change in breaking] == [
        f"orders.order_placed v1 {expected}; breaks readmodels, webhooks (consumers of orders.order_placed)"]


class _Card(Message):
    number: str


class _Transfer(Message):
    iban: str


def _changes_between(old: type[Message], new: type[Message]) -> list[tuple[str, str, bool]]:
    return [(change.field, change.what, change.breaking) for change in contractlock.changes(
        {"x.y": {"1": {"kind": "event", "schema": old.model_json_schema()}}},
        {"x.y": {"1": {"kind": "event", "schema": new.model_json_schema()}}})]


def test_tightened_constraints_and_inner_types_are_breaking_and_widening_is_not():
    def model(**fields) -> type[Message]:
        return create_model("M", __base__=Message, **fields)

    assert _changes_between(model(quantity=(int, Field(ge=1))), model(quantity=(int, Field(ge=2)))) == [
        ("quantity", "minimum tightened from 1 to 2", True)]
    assert _changes_between(model(code=(str, Field(max_length=5))), model(code=(str, Field(max_length=3)))) == [
        ("code", "maxLength tightened from 5 to 3", True)]
    assert _changes_between(model(kind=(Literal["a"], ...)), model(kind=(Literal["b"], ...))) == [
        ("kind", "enum narrowed: 'a' no longer allowed", True)]
    assert _changes_between(model(counts=(dict[str, int], ...)), model(counts=(dict[str, str], ...))) == [
        ("counts{}", "retyped from integer to string", True)]
    # Loosening is not breaking (for readers on the new code), nor is an unchanged union of models.
    assert _changes_between(model(kind=(Literal["a", "b"], ...)), model(kind=(str, ...))) == []
    assert _changes_between(model(quantity=(int, Field(ge=2))), model(quantity=(int, Field(ge=1)))) == []
    paid_by = model(paid_by=(_Card | _Transfer, ...))
    assert _changes_between(paid_by, paid_by) == []


def test_a_narrowed_enum_and_a_version_gone_are_breaking():
    registry = contractlock.locked_schemas()
    widened, narrowed = copy.deepcopy(registry), copy.deepcopy(registry)
    widened[PLACED]["1"]["schema"]["properties"]["status"]["enum"] = ["PENDING", "CONFIRMED"]
    narrowed[PLACED]["1"]["schema"]["properties"]["status"]["enum"] = ["PENDING"]
    [change] = contractlock.changes(widened, narrowed)
    assert change.breaking and change.field == "status" and "'CONFIRMED' no longer allowed" in change.what
    gone = copy.deepcopy(registry)
    del gone[PLACED]["1"]
    [change] = contractlock.changes(registry, gone)
    assert change.breaking and "no longer registered" in change.what


def test_a_new_optional_field_and_a_new_version_pass_and_update_the_lock():
    class WithChannel(orders.OrderPlacedV1):
        channel: str = "web"

    [change] = _with_placed_as(WithChannel)
    assert (change.field, change.what, change.breaking) == ("channel", "a new optional field", False)
    registry = contractlock.locked_schemas()
    newer = copy.deepcopy(registry)
    newer[PLACED]["99"] = newer[PLACED]["1"]
    [change] = contractlock.changes(registry, newer)
    assert (change.version, change.what, change.breaking) == (99, "a new version", False)


def test_the_command_refuses_a_breaking_lock_and_writes_a_compatible_one(tmp_path):
    lock = tmp_path / "contracts.lock.json"
    registry = contractlock.read_lock(ROOT / contractlock.LOCK_FILE)  # what the command's process registers
    stale = copy.deepcopy(registry)
    del stale[PLACED]["1"]["schema"]["properties"]["reason"]  # the lock predates an optional field
    lock.write_text(contractlock.lock_text(stale))
    catalog = ["--catalog", str(tmp_path / "asyncapi.json")]  # never the repository's
    checked = _lock_command("--path", str(lock), *catalog, "--check")
    assert checked.returncode == 1 and "out of date" in checked.stderr, checked.stdout + checked.stderr
    written = _lock_command("--path", str(lock), *catalog)
    assert written.returncode == 0, written.stderr
    assert contractlock.read_lock(lock) == registry
    broken = copy.deepcopy(registry)
    broken[PLACED]["1"]["schema"]["properties"]["brand_new"] = {"type": "string"}  # gone from the registry
    lock.write_text(contractlock.lock_text(broken))
    refused = _lock_command("--path", str(lock), *catalog)
    assert refused.returncode == 1 and "field 'brand_new': removed" in refused.stdout
    assert contractlock.read_lock(lock) == broken  # unchanged
