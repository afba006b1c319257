"""The bus topology, the same on every transport.

- ``waybill.events``: one durable topic exchange; routing key = message type, so each
  context's queue binds exactly the event and document types it handles.
- ``waybill.commands``: a durable direct exchange; routing key = the owning context, so a
  command goes point to point to its owner's queue and nobody else's.
- ``waybill.<context>``: one durable queue per consuming context.

Partitions (``WAYBILL_PARTITIONS`` = N > 1): each consumer gets N queues
``waybill.<context>.p<i>`` instead, and a message goes to partition
``crc32(aggregate_id) % N`` (routing key ``<type>.p<i>``, or ``<context>.p<i>`` for a
command). Each partition queue has a single active consumer (RabbitMQ's
``x-single-active-consumer``; further consumers stand by), so one aggregate's messages are
applied in order while the partitions run in parallel. N is the same for every process of
a deployment; changing it means draining the queues first.
"""

from __future__ import annotations

import zlib

from django.conf import settings
from kombu import Connection, Exchange, Queue, binding

from . import contexts
from .messages import Kind, spec_for

EVENTS = Exchange("waybill.events", type="topic", durable=True)
COMMANDS = Exchange("waybill.commands", type="direct", durable=True)
JSON = "application/json"


def connect(*, confirm_each_publish: bool = True) -> Connection:
    """A broker connection. ``confirm_each_publish=False`` is for the relay, which asks for
    publisher confirms itself and waits for many at once (see ``waybill.relay``)."""
    options = dict(settings.WAYBILL_BROKER_TRANSPORT_OPTIONS)
    if not confirm_each_publish:
        options["confirm_publish"] = False
    return Connection(settings.WAYBILL_BROKER_URL, transport_options=options)


def partitions() -> range:
    return range(settings.WAYBILL_PARTITIONS)


def partition_of(aggregate_id: str) -> int:
    # crc32, not hash(): the same answer in every process and every run.
    return zlib.crc32(aggregate_id.encode()) % settings.WAYBILL_PARTITIONS


def _partitioned(key: str, partition: int) -> str:
    return key if settings.WAYBILL_PARTITIONS == 1 else f"{key}.p{partition}"


def queue_name(context_name: str, partition: int = 0) -> str:
    return _partitioned(f"waybill.{context_name}", partition)


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


def context_queue(context: contexts.BoundedContext, partition: int = 0, *, declare: bool | None = None) -> Queue:
    """The context's queue (of one partition). ``declare`` False makes consumers use it as
    declared by the topology step (a service's broker user may not declare it); default:
    the setting."""
    bindings = [binding(EVENTS, routing_key=_partitioned(t, partition)) for t in sorted(context.consumed_types)]
    bindings.append(binding(COMMANDS, routing_key=_partitioned(context.name, partition)))
    arguments = dict(QUEUE_ARGUMENTS)
    if settings.WAYBILL_PARTITIONS > 1:
        arguments["x-single-active-consumer"] = True
    return Queue(
        queue_name(context.name, partition),
        bindings=bindings,
        durable=True,
        queue_arguments=arguments,
        no_declare=not (settings.WAYBILL_BROKER_DECLARE if declare is None else declare),
    )


def context_queues(context: contexts.BoundedContext) -> list[Queue]:
    return [context_queue(context, partition) for partition in partitions()]


def route(message_type: str, schema_version: int, aggregate_id: str) -> tuple[Exchange, str]:
    """Where a message goes: events and documents to many, commands to their owner; to the
    aggregate's partition."""
    spec = spec_for(message_type, schema_version)
    partition = partition_of(aggregate_id)
    if spec.kind is Kind.COMMAND:
        return COMMANDS, _partitioned(spec.consumer or spec.owner, partition)
    return EVENTS, _partitioned(message_type, partition)


def declare(connection: Connection) -> None:
    """Declare exchanges and every registered context's queue with its bindings.

    Declared before the first publish: a topic exchange drops what no queue is bound to."""
    channel = connection.default_channel
    for exchange in (EVENTS, COMMANDS, DEAD):
        exchange(channel).declare()
    DEAD_QUEUE(channel).declare()
    for context in contexts.all_contexts():
        for partition in partitions():
            queue = context_queue(context, partition, declare=True)(channel)
            queue.declare()
            for message_type in context.retired_types:
                # Unbinding a binding that is not there is harmless (RabbitMQ answers ok).
                queue.unbind_from(EVENTS, routing_key=_partitioned(message_type, partition))
