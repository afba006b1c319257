"""The bus topology, the same on every transport.

- ``waybill.events``: one durable topic exchange; routing key = message type, so each
  context's queue binds exactly the event and document types it handles.
- ``waybill.commands``: a durable direct exchange; routing key = the owning context, so a
  command goes point to point to its owner's queue and nobody else's.
- ``waybill.<context>``: one durable queue per consuming context.
"""

from __future__ import annotations

from django.conf import settings
from kombu import Connection, Exchange, Queue, binding

from . import contexts
from .messages import Kind, spec_for

EVENTS = Exchange("waybill.events", type="topic", durable=True)
COMMANDS = Exchange("waybill.commands", type="direct", durable=True)
JSON = "application/json"


def connect() -> Connection:
    return Connection(
        settings.WAYBILL_BROKER_URL,
        transport_options=dict(settings.WAYBILL_BROKER_TRANSPORT_OPTIONS),
    )


def queue_name(context_name: str) -> str:
    return f"waybill.{context_name}"


DEAD = Exchange("waybill.dead", type="fanout", durable=True)
DEAD_QUEUE = Queue("waybill.dead", DEAD, durable=True)
# A message redelivered this often without an ack (its consumer keeps dying on it) is
# moved to waybill.dead by RabbitMQ instead of crash-looping the consumers.
DELIVERY_LIMIT = 5
# Quorum queues replicate and survive broker restarts; transports without queue
# arguments (the in-memory one) ignore these.
QUEUE_ARGUMENTS = {
    "x-queue-type": "quorum",
    "x-delivery-limit": DELIVERY_LIMIT,
    "x-dead-letter-exchange": DEAD.name,
}


def context_queue(context: contexts.BoundedContext, *, declare: bool | None = None) -> Queue:
    """The context's queue. ``declare`` False makes consumers use it as declared by the
    topology step (a service's broker user may not declare it); default: the setting."""
    bindings = [binding(EVENTS, routing_key=t) for t in sorted(context.consumed_types)]
    bindings.append(binding(COMMANDS, routing_key=context.name))
    return Queue(
        queue_name(context.name),
        bindings=bindings,
        durable=True,
        queue_arguments=QUEUE_ARGUMENTS,
        no_declare=not (settings.WAYBILL_BROKER_DECLARE if declare is None else declare),
    )


def route(message_type: str, schema_version: int) -> tuple[Exchange, str]:
    """Where a message goes: events and documents to many, commands to their owner."""
    spec = spec_for(message_type, schema_version)
    if spec.kind is Kind.COMMAND:
        return COMMANDS, spec.consumer or spec.owner
    return EVENTS, message_type


def declare(connection: Connection) -> None:
    """Declare exchanges and every registered context's queue with its bindings.

    Declared before the first publish: a topic exchange drops what no queue is bound to."""
    channel = connection.default_channel
    for exchange in (EVENTS, COMMANDS, DEAD):
        exchange(channel).declare()
    DEAD_QUEUE(channel).declare()
    for context in contexts.all_contexts():
        context_queue(context, declare=True)(channel).declare()
