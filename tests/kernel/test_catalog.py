"""The message catalog: an AsyncAPI 3.0 document that the specification's own JSON Schema
accepts, listing every registered message with each version's schema, whose senders and
receivers are what the bus really binds, served as JSON and as a page for people."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest
from django.test import Client

from waybill import bus, catalog, contexts
from waybill.messages import Kind, registered_specs

# Fetched at install time from the AsyncAPI initiative's own package (bin/fetch-asyncapi-spec).
SPECIFICATION = Path(sys.prefix) / "share" / "asyncapi" / "3.0.0.json"


@pytest.fixture(scope="module")
def document() -> dict:
    return catalog.catalog()


def test_the_catalog_is_a_valid_asyncapi_3_document(document):
    assert SPECIFICATION.exists(), f"{SPECIFICATION} is missing: make test's set-up fetches it"
    schema = json.loads(SPECIFICATION.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message[:300]}" for e in errors[:10])
    # And the validator does reject what is not one.
    broken = {**document, "channels": {"x": {"address": 42}}}
    assert any(True for _ in jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_every_registered_message_is_listed_with_each_versions_schema(document):
    messages = document["components"]["messages"]
    assert set(messages) == {f"{spec.type}.v{spec.schema_version}" for spec in registered_specs()}
    placed = messages["orders.order_placed.v2"]
    assert placed["x-waybill-kind"] == "event" and placed["contentType"] == "application/json"
    payload = document["components"]["schemas"]["orders.order_placed.v2"]
    total = document["components"]["schemas"][payload["properties"]["total"]["$ref"].rsplit("/", 1)[-1]]
    assert set(total["properties"]) == {"amount", "currency"}
    assert "$defs" not in json.dumps(document)  # every reference resolves inside the document


def _receives(document: dict) -> dict[str, set[tuple[str, str]]]:
    """consumer -> {(exchange, routing key)} its operations say it receives."""
    found: dict[str, set[tuple[str, str]]] = {}
    for operation in document["operations"].values():
        if operation["action"] != "receive":
            continue
        channel = document["channels"][operation["channel"]["$ref"].rsplit("/", 1)[-1]]
        found.setdefault(operation["x-waybill-consumer"], set()).add(
            (channel["bindings"]["amqp"]["exchange"]["name"], channel["address"]))
    return found


def test_its_receivers_are_the_bindings_the_bus_declares_and_its_senders_the_owners(document, settings):
    settings.WAYBILL_PARTITIONS = 1
    receives = _receives(document)
    for context in contexts.all_contexts():
        queue = bus.context_queue(context, declare=True)
        # waybill.translated carries copies for a lagging consumer, of what it receives here.
        declared = {(b.exchange.name, b.routing_key) for b in queue.bindings if b.exchange != bus.TRANSLATED}
        if context.bindings:
            # Bound at run time, to what its endpoints want among what it handles: the
            # catalog lists all it may bind; the commands binding is declared as usual.
            declared |= {(bus.EVENTS.name, t) for t in context.consumed_events}
        commands = {(bus.COMMANDS.name, context.name)}
        assert receives.get(context.name, set()) | commands == declared, context.name
    sent = set()
    for operation in document["operations"].values():
        if operation["action"] == "send":
            message = document["components"]["messages"][operation["messages"][0]["$ref"].rsplit("/", 1)[-1]]
            assert operation["title"] == f"{message['name'].split('.')[0]} sends {message['name']}"
            sent.add(message["name"])
    assert sent == {spec.type for spec in registered_specs() if spec.kind is not Kind.COMMAND}
    commands = {spec.type for spec in registered_specs() if spec.kind is Kind.COMMAND}
    assert {document["channels"][c]["address"] for c in document["channels"]
            if c.startswith("commands_")} == {spec.consumer or spec.owner for spec in registered_specs()
                                              if spec.type in commands}


@pytest.mark.django_db
def test_it_is_served_as_json_and_as_a_page_to_anyone():
    committed = json.loads((Path(catalog.__file__).resolve().parents[2] / catalog.CATALOG_FILE).read_text())
    anonymous = Client()
    answer = anonymous.get("/api/asyncapi.json")
    assert answer.status_code == 200 and answer.json() == committed
    page = anonymous.get("/api/asyncapi/")
    assert page.status_code == 200
    text = page.content.decode()
    for message_type in {message["name"] for message in committed["components"]["messages"].values()}:
        assert f'id="{message_type}"' in text
    assert "lines[].unit_price.currency" in text and "readmodels (reads v2)" in text

    def section(message_type: str) -> str:
        return text.split(f'id="{message_type}"', 1)[1].split("<section", 1)[0]

    # Commands share their consumer's channel: each is credited to its own receiver, once.
    assert "received by inventory (reads v1)." in section("inventory.reserve_stock")
    assert "received by payments (reads v1)." in section("orders.refund_payment")
    assert "Sent by orders;" in section("orders.order_placed")
    assert "/api/asyncapi/" in anonymous.get("/api/schema/").content.decode()
