"""The message catalog: an AsyncAPI 3.0 document of everything on the bus, built from the
registry (every message type and version with its JSON Schema), the registered consumers
(who reads what, at which version) and the bus's topology (exchanges and routing keys).

Generated with the contracts' lock (``make contracts-lock``) into ``docs/asyncapi.json``,
in a process that hosts every context, and served from that file at ``/api/asyncapi.json``
(and as a page for people at ``/api/asyncapi/``): in services mode the process that answers
those URLs hosts no context and could not see their consumers. Public, like the OpenAPI
schema at ``/api/schema/``: it describes contracts, never data, and the broker it names is
not reachable from outside.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from . import bus, contexts
from .contractlock import SchemaDefs
from .messages import Envelope, Kind, MessageSpec, registered_specs, versions_of

CATALOG_FILE = Path("docs") / "asyncapi.json"
_REPOSITORY = Path(__file__).resolve().parents[2]
AMQP_BINDING_VERSION = "0.3.0"


def catalog() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the registry and consumers registered here."""
    specs = registered_specs()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Envelope": _envelope_schema()}
    for spec in specs:
        name = _message_name(spec)
        payload, defs = _schema_with_components(spec)
        schemas[name] = payload
        schemas.update(defs)
        messages[name] = {
            "name": spec.type, "title": f"{spec.type} v{spec.schema_version}",
            "summary": (spec.schema.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ") or spec.type,
            "contentType": bus.JSON,
            "tags": [{"name": str(spec.kind)}, {"name": spec.owner}],
            "payload": _on_the_wire(spec, name),
            "x-waybill-kind": str(spec.kind), "x-waybill-schema-version": spec.schema_version,
        }
    for message_type in sorted({spec.type for spec in specs}):
        versions = [spec for spec in specs if spec.type == message_type]
        newest = versions[-1]
        channel = _channel_id(newest)
        if channel not in channels:
            exchange, routing_key = _destination(newest)
            channels[channel] = {
                "address": routing_key,
                "title": f"{exchange.name} {routing_key}",
                "description": _channel_description(newest, exchange.name),
                "messages": {},
                "bindings": {"amqp": {"is": "routingKey", "bindingVersion": AMQP_BINDING_VERSION,
                                      "exchange": {"name": exchange.name, "type": exchange.type, "durable": True,
                                                   "autoDelete": False, "vhost": "/"}}},
            }
        for spec in versions:
            channels[channel]["messages"][_message_name(spec)] = {"$ref": f"#/components/messages/{_message_name(spec)}"}
        if newest.kind is not Kind.COMMAND:
            # A context publishes its own events and documents; a command is its owner's to
            # receive, and whoever needs it done sends it (the registry does not say who).
            operations[_operation_id(newest.owner, "sends", message_type)] = {
                "action": "send", "channel": {"$ref": f"#/channels/{channel}"},
                "title": f"{newest.owner} sends {message_type}",
                "summary": f"Published by {newest.owner}, at v{newest.schema_version}.",
                "messages": [_channel_message(channel, newest)],
                "x-waybill-publisher": newest.owner,
            }
        for context in contexts.all_contexts():
            found = context.handler_for(message_type)
            if found is None:
                continue
            _, reads = found
            operations[_operation_id(context.name, "receives", message_type)] = {
                "action": "receive", "channel": {"$ref": f"#/channels/{channel}"},
                "title": f"{context.name} receives {message_type}",
                "summary": (f"Consumed by {context.name} (queue {bus.queue_name(context.name)}), read as "
                            f"v{reads}; older and newer versions are converted to it on the way in."
                            + (" Bound only while something wants it (bindings chosen at run time)."
                               if context.bindings else "")),
                "messages": [_channel_message(channel, spec) for spec in versions],
                "x-waybill-consumer": context.name, "x-waybill-reads-version": reads,
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Waybill messages",
            "version": "1.0.0",
            "description": (
                "Every message on Waybill's bus: events and documents on the topic exchange "
                f"{bus.EVENTS.name} (routing key: the message type), commands on the direct exchange "
                f"{bus.COMMANDS.name} (routing key: the consumer that carries them out). Each is a JSON "
                "envelope whose payload validates against its type and schema_version. With "
                "WAYBILL_PARTITIONS above 1 a routing key ends in .p<N>, the aggregate's partition. "
                "Generated from the registry: see README, \"Changing a message\"."),
        },
        "defaultContentType": bus.JSON,
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def catalog_text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _message_name(spec: MessageSpec) -> str:
    return f"{spec.type}.v{spec.schema_version}"


def _channel_id(spec: MessageSpec) -> str:
    exchange, routing_key = _destination(spec)
    return f"{'commands' if exchange is bus.COMMANDS else 'events'}.{routing_key}".replace(".", "_")


def _operation_id(context: str, verb: str, message_type: str) -> str:
    return f"{context}_{verb}_{message_type}".replace(".", "_")


def _channel_message(channel: str, spec: MessageSpec) -> dict[str, str]:
    return {"$ref": f"#/channels/{channel}/messages/{_message_name(spec)}"}


def _destination(spec: MessageSpec):
    # The unpartitioned routing key; ``bus.route`` adds the partition.
    if spec.kind is Kind.COMMAND:
        return bus.COMMANDS, spec.consumer or spec.owner
    return bus.EVENTS, spec.type


def _channel_description(spec: MessageSpec, exchange: str) -> str:
    if spec.kind is Kind.COMMAND:
        return (f"Commands to {spec.consumer or spec.owner}, on {exchange}, from whichever context needs them "
                f"carried out; versions {versions_of(spec.type)}.")
    what = "state documents (the entity's whole state; keep the newest by aggregate_version)" \
        if spec.kind is Kind.DOCUMENT else "events"
    return f"{spec.type}: {what} published by {spec.owner}, on {exchange}; versions {versions_of(spec.type)}."


def _envelope_schema() -> dict[str, Any]:
    schema = Envelope.model_json_schema()
    schema["description"] = "The fields every message carries; its payload is the message's own schema."
    return schema


def _on_the_wire(spec: MessageSpec, name: str) -> dict[str, Any]:
    """What a message of ``spec`` is on the bus: an envelope naming its type and version,
    with its payload."""
    return {"allOf": [
        {"$ref": "#/components/schemas/Envelope"},
        {"type": "object", "properties": {
            "type": {"const": spec.type}, "schema_version": {"const": spec.schema_version},
            "payload": {"$ref": f"#/components/schemas/{name}"}}},
    ]}


def _schema_with_components(spec: MessageSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The payload's JSON Schema with its ``$defs`` moved to the components, under names
    of this message's own (two messages may each have an ``OrderLine``)."""
    schema = copy.deepcopy(spec.schema.model_json_schema())
    prefix = _message_name(spec)
    defs = {f"{prefix}.{key}": value for key, value in schema.pop("$defs", {}).items()}

    def relink(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: (f"#/components/schemas/{prefix}.{value.rsplit('/', 1)[-1]}"
                          if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/")
                          else relink(value)) for key, value in node.items()}
        if isinstance(node, list):
            return [relink(item) for item in node]
        return node

    return relink(schema), {key: relink(value) for key, value in defs.items()}


# --- served ----------------------------------------------------------------------------------

@functools.cache
def _committed() -> dict[str, Any]:
    # Read once per process: the file changes only with a deployment.
    path = _REPOSITORY / CATALOG_FILE
    if not path.exists():
        raise Http404("The message catalog has not been generated (make contracts-lock).")
    return json.loads(path.read_text())


def catalog_json(request: HttpRequest) -> JsonResponse:
    """The AsyncAPI document, as committed."""
    return JsonResponse(_committed(), json_dumps_params={"indent": 2})


def catalog_page(request: HttpRequest) -> HttpResponse:
    """The catalog for people: per message type, who sends and who receives it, and each
    version's fields."""
    document = _committed()
    messages = document["components"]["messages"]
    schemas = document["components"]["schemas"]
    by_type: dict[str, dict[str, Any]] = {}
    for name, message in sorted(messages.items()):
        entry = by_type.setdefault(message["name"], {"type": message["name"], "kind": message["x-waybill-kind"],
                                                     "versions": [], "senders": [], "receivers": []})
        entry["versions"].append({"version": message["x-waybill-schema-version"], "summary": message["summary"],
                                  "fields": _fields(SchemaDefs(schemas), schemas[name])})
    for operation in document["operations"].values():
        # A commands channel carries every command to one consumer: the operation's own
        # messages say which type it is about.
        message_type = messages[operation["messages"][0]["$ref"].rsplit("/", 1)[-1]]["name"]
        if operation["action"] == "send":
            by_type[message_type]["senders"].append(operation["x-waybill-publisher"])
        else:
            by_type[message_type]["receivers"].append(
                f"{operation['x-waybill-consumer']} (reads v{operation['x-waybill-reads-version']})")
    for entry in by_type.values():
        entry["address"] = next(c for c in document["channels"].values()
                                if any(messages[m]["name"] == entry["type"] for m in c["messages"]))["title"]
    return render(request, "waybill/catalog.html", {
        "info": document["info"], "types": [by_type[key] for key in sorted(by_type)],
    })


def _fields(defs: SchemaDefs, schema: dict[str, Any], prefix: str = "") -> list[dict[str, str]]:
    """A schema's fields as rows (name, type, required), nested objects flattened."""
    rows = []
    required = set(schema.get("required", []))
    for name, field in schema.get("properties", {}).items():
        field = defs.resolve(field)
        path = f"{prefix}{name}"
        nested = defs.resolve(field.get("items", {})) if field.get("type") == "array" else field
        rows.append({"name": path, "type": defs.shape(field), "required": name in required})
        if "properties" in nested:
            rows += _fields(defs, nested, f"{path}{'[]' if nested is not field else ''}.")
    return rows
