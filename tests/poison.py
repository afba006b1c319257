"""Poison messages: what a broken or hostile producer can put on the bus as
``orders.order_placed``, each with the reason its dead letter must give. The first four
crashed the readmodels workers before issue 10; the rest were dead-lettered already and
must stay so. Shared by the in-process test (tests/kernel/test_consumer.py) and the one
on the real broker (tests/services/test_poison.py)."""

from __future__ import annotations

import json
import pickle
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

JSON = "application/json"
PICKLE = "application/x-python-serialize"
ROUTING_KEY = "orders.order_placed"


def order_placed(*, payload: dict | None = None, **fields) -> dict:
    """A valid ``orders.order_placed`` envelope; ``fields`` replace envelope fields."""
    order_id = str(uuid.uuid4())
    if payload is None:
        payload = {"order_id": order_id, "customer_id": 1, "status": "PENDING", "reason": "", "total": "5.00",
                   "lines": [{"sku": "LAMP-1", "name": "Lamp", "quantity": 1, "unit_price": "5.00"}]}
    return {"id": str(uuid.uuid4()), "type": ROUTING_KEY, "schema_version": 1, "aggregate_id": order_id,
            "aggregate_version": 1, "occurred_at": datetime.now(UTC).isoformat(),
            "correlation_id": str(uuid.uuid4()), "causation_id": None, "traceparent": None,
            "payload": payload, **fields}


def _encoded(envelope: dict) -> bytes:
    return json.dumps(envelope).encode()


def _with_name(name: str) -> bytes:
    """An order whose line's name is ``name``, as raw JSON text (escapes kept as written)."""
    return _encoded(order_placed()).replace(b'"name": "Lamp"', b'"name": "' + name.encode() + b'"')


@dataclass(frozen=True)
class Poison:
    name: str
    body: bytes
    reason: str  # a part of the dead letter's reason
    content_type: str | None = JSON
    content_encoding: str | None = "utf-8"


POISONS = [
    # Crashed both readmodels workers before issue 10.
    Poison("nul-byte", b"\x00", "malformed JSON"),
    Poison("pickle-protocol-5", pickle.dumps({"order": "x" * 10, "n": 0}, protocol=5), "refused content type",
           content_type=PICKLE, content_encoding="binary"),
    Poison("nul-escape-in-payload", _with_name("La\\u0000mp"), "NUL"),
    Poison("deeply-nested", b"[" * 200_000, "nested deeper"),
    # Dead-lettered before, and still.
    Poison("not-json", b"{not json", "malformed JSON"),
    Poison("empty-body", b"", "malformed JSON"),
    Poison("json-array", b'[{"type": "orders.order_placed"}]', "expected a JSON object"),
    Poison("envelope-missing-fields", b'{"type": "orders.order_placed"}', "invalid envelope"),
    Poison("wrong-field-types", _encoded(order_placed(aggregate_version="first", payload=[])), "invalid envelope"),
    Poison("invalid-uuid-id", _encoded(order_placed(id="not-a-uuid")), "invalid envelope: id"),
    Poison("invalid-payload", _encoded(order_placed(payload={"order_id": "nope"})),
           "invalid payload for orders.order_placed v1"),
    Poison("unknown-type", _encoded(order_placed(type="orders.order_teleported")), "unknown message type"),
    Poison("version-99", _encoded(order_placed(schema_version=99)), "unsupported schema version 99"),
    Poison("five-megabytes", _with_name("x" * 5 * 1024 * 1024), "over the limit"),
    Poison("invalid-utf8", b'{"id": "\xff\xfe", "type": "orders.order_placed"}', "not UTF-8"),
    Poison("no-content-type", _encoded(order_placed()), "refused content type", content_type=None),
    Poison("text-plain", _encoded(order_placed()), "refused content type 'text/plain'", content_type="text/plain"),
    Poison("pickle-protocol-0", pickle.dumps({"order": "x"}, protocol=0), "refused content type",
           content_type=PICKLE, content_encoding="binary"),
    Poison("gzip-garbage", b"\x1f\x8b\x08\x00garbage", "refused content encoding 'gzip'", content_encoding="gzip"),
    Poison("lone-surrogate", _with_name("La\\ud800mp"), "lone surrogate"),
    # json.loads reads bytes as UTF-16/32 if they look so, and lets an encoded surrogate
    # through: the decoder reads strict UTF-8 itself.
    Poison("encoded-surrogate", _encoded(order_placed()).replace(b'"Lamp"', b'"La\xed\xa0\x80mp"'), "not UTF-8"),
    Poison("utf16-with-nul-escape", _with_name("La\\u0000mp").decode().encode("utf-16"), "not UTF-8"),
    Poison("nan-total", _encoded(order_placed()).replace(b'"total": "5.00"', b'"total": NaN'), "not a JSON number"),
]


def publish(channel, poison: Poison, *, exchange: str = "waybill.events", routing_key: str = ROUTING_KEY,
            headers: dict | None = None) -> None:
    """Publish ``poison`` exactly as it is (a Kombu producer would serialise a body
    without a content type, and encode text), on any Kombu transport's channel, with an
    ``x-poison`` header naming it."""
    message = channel.prepare_message(poison.body, content_type=poison.content_type,
                                      content_encoding=poison.content_encoding,
                                      headers={"x-poison": poison.name, **(headers or {})})
    channel.basic_publish(message, exchange=exchange, routing_key=routing_key)
