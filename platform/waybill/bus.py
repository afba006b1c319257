"""The bus topology, the same on every transport.

- ``waybill.events``: one durable topic exchange; routing key = message type, so each
  context's queue binds exactly the event and document types it handles (or, for a
  consumer with bindings chosen at run time, those of them it wants now: below).
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

Bindings chosen at run time: a consumer whose manifest names a ``bindings`` function (webhooks:
only the types some endpoint subscribes to) gets no event binding from ``context_queue``;
``rebind`` asks the function which types to bind now and makes the queue's event bindings
exactly those (``bind_exactly``). The topology step does it once (``declare``); the consumer's
own process keeps it up to date (``waybill.consumer.ContextConsumer.rebind``), woken at once
by ``bindings_changed`` in the process that made the change.

A consumer whose code lags (``WAYBILL_LAGGING``: during a rolling deployment it still
reads an older version of some type than its producer now publishes): its queue is fed
through ``waybill.translator.<consumer>`` instead, which binds what the consumer's queue
binds, and the translator (``waybill.translator``) republishes each message to the
consumer's queue through ``waybill.translated``, downcast to the version the consumer
reads. Every consumer queue (but one whose bindings are chosen at run time, which cannot
lag) is bound to ``waybill.translated`` under its own name, so the translator's copies
reach it whether it lags or no longer does.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from amqp.exceptions import NotFound, PreconditionFailed
from kombu import Connection, Exchange, Queue, binding

from . import contexts
from . import manifest as manifests
from .historylimits import STREAM
from .messages import Kind, MessageRefused, missing_steps, spec_for

EVENTS = Exchange("waybill.events", type="topic", durable=True)
COMMANDS = Exchange("waybill.commands", type="direct", durable=True)
# The translator's copies for a lagging consumer; routing key = the consumer's queue. A
# topic exchange so that each broker user may publish to its own queues' keys alone
# (RabbitMQ topic permissions, launcher.provision).
TRANSLATED = Exchange("waybill.translated", type="topic", durable=True)
JSON = "application/json"
log = logging.getLogger(__name__)


def connect(*, confirm_each_publish: bool = True, heartbeat: float = 0) -> Connection:
    """A broker connection. ``confirm_each_publish=False`` is for the relay, which asks for
    publisher confirms itself and waits for many at once (see ``waybill.relay``).
    ``heartbeat``: AMQP heartbeats every that many seconds, for a connection whose owner
    calls ``heartbeat_check()`` often (the consumer's loop); 0, none."""
    options = dict(settings.WAYBILL_BROKER_TRANSPORT_OPTIONS)
    if not confirm_each_publish:
        options["confirm_publish"] = False
    return Connection(settings.WAYBILL_BROKER_URL, transport_options=options, heartbeat=heartbeat)


def retries_for_every_node(connection: Connection) -> int:
    """``ensure_connection``'s ``max_retries`` that tries each node of the broker URL's
    failover list once (kombu moves to the next node at each retry, without waiting until
    it has tried them all), and one node twice as before."""
    return max(len(connection.alt), 2) - 1


@contextlib.contextmanager
def consuming() -> Iterator[Connection]:
    """The connection of a long-running consumer of this process (a context's consumer, a
    translator): with heartbeats, for its loop to check, connected, and the topology
    declared where this process declares it."""
    with connect(heartbeat=settings.WAYBILL_CONSUMER_HEARTBEAT_SECONDS) as connection:
        connection.ensure_connection(max_retries=3)
        if settings.WAYBILL_BROKER_DECLARE:
            declare(connection)
        yield connection


def _declare_replicated(connection: Connection, queue: Queue) -> None:
    """Declare ``queue``, a quorum queue. Deployments before the cluster declared it classic,
    and a queue's type cannot change: the classic one is replaced, its messages (dead letters,
    say) moved to a quorum queue ``<name>.moving`` and back, with publisher confirms, so a
    crash halfway leaves them there and the next declare finishes the move. Refused while
    anything consumes the classic one (its workers must stop first, as a deploy does)."""
    if connection.transport.driver_type != "amqp":  # no queue types (the in-memory transport)
        queue(connection.default_channel).declare()
        return
    holding = Queue(f"{queue.name}.moving", durable=True, queue_arguments={"x-queue-type": "quorum"})
    with connection.channel() as probe:  # a refused declare closes its channel: never the default one
        try:
            queue(probe).declare()
            replaced = False
        except PreconditionFailed as refused:
            if "x-queue-type" not in str(refused):
                raise  # another difference of arguments: not ours to settle
            replaced = True
    with connection.channel() as channel:
        if replaced:
            holding(channel).declare()
            moved = _move(channel, queue.name, holding.name)
            channel.queue_delete(queue.name, if_unused=True)  # refused while a consumer holds it
            queue(channel).declare()
            log.info("%s was a classic queue (on one node of a cluster): declared again as a quorum queue, "
                     "its %d messages moved", queue.name, moved)
        try:
            channel.queue_declare(holding.name, passive=True)
        except NotFound:
            return
    with connection.channel() as channel:  # the failed passive declare closed the other one
        _move(channel, holding.name, queue.name)
        channel.queue_delete(holding.name)  # emptied; a quorum queue takes no if_empty


def _move(channel, source: str, target: str) -> int:
    """Every message of queue ``source`` into queue ``target``, as it was (body, properties,
    headers), each acknowledged only once the broker confirmed the copy: at least once."""
    channel.confirm_select()
    moved = 0
    while (message := channel.basic_get(source, no_ack=False)) is not None:
        channel.basic_publish_confirm(message, exchange="", routing_key=target, mandatory=True)
        channel.basic_ack(message.delivery_tag)
        moved += 1
    return moved


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
# Replicated like every queue of the topology: what RabbitMQ dead-letters there must not
# live on one node of a cluster (``_declare_replicated``).
DEAD_QUEUE = Queue("waybill.dead", DEAD, durable=True, queue_arguments={"x-queue-type": "quorum"})
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


def _direct_bindings(context: contexts.BoundedContext, partition: int) -> list[binding]:
    """What the context's queue binds when it reads from the bus itself: its events (unless
    chosen at run time) and its commands."""
    # A consumer whose bindings are chosen at run time gets its event bindings from
    # rebind() alone: declaring or consuming its queue must not bind every type again.
    static = () if context.bindings else sorted(context.consumed_events)
    bindings = [binding(EVENTS, routing_key=_partitioned(t, partition)) for t in static]
    bindings.append(binding(COMMANDS, routing_key=_partitioned(context.name, partition)))
    return bindings


def _arguments(base: dict) -> dict:
    arguments = dict(base)
    if settings.WAYBILL_PARTITIONS > 1:
        arguments["x-single-active-consumer"] = True
    return arguments


def context_queue(context: contexts.BoundedContext, partition: int = 0, *, declare: bool | None = None) -> Queue:
    """The context's queue (of one partition). ``declare`` False makes consumers use it as
    declared by the topology step (a service's broker user may not declare it); default:
    the setting. A lagging consumer's queue binds only the translator's copies."""
    name = queue_name(context.name, partition)
    if context.name in lagging():
        bindings = [binding(TRANSLATED, routing_key=name)]
    elif context.bindings:
        bindings = _direct_bindings(context, partition)  # it cannot lag (check_lagging)
    else:
        bindings = [*_direct_bindings(context, partition), binding(TRANSLATED, routing_key=name)]
    return Queue(name, bindings=bindings, durable=True, queue_arguments=_arguments(QUEUE_ARGUMENTS),
                 no_declare=not (settings.WAYBILL_BROKER_DECLARE if declare is None else declare))


def translator_queue(context: contexts.BoundedContext, partition: int = 0, *, declare: bool | None = None) -> Queue:
    """The queue the translator reads for a lagging consumer: it binds what the consumer's
    own queue binds when it does not lag. No delivery limit: nothing in it can make the
    translator fail (it forwards what it cannot read as it came), so a message given back
    by a translator that restarted is never dead-lettered past the consumer, out of order."""
    return Queue(_partitioned(f"waybill.translator.{context.name}", partition),
                 bindings=_direct_bindings(context, partition), durable=True,
                 queue_arguments=_arguments({"x-queue-type": QUEUE_ARGUMENTS["x-queue-type"]}),
                 no_declare=not (settings.WAYBILL_BROKER_DECLARE if declare is None else declare))


def history_queue(name: str = STREAM) -> Queue:
    """The event history in services mode (``waybill.history``): a stream bound to every
    routing key of the events exchange, partitioned ones too. Its retention is a policy
    (``waybill.historylimits``), not an argument: arguments cannot change once declared."""
    return Queue(name, EVENTS, routing_key="#", durable=True, queue_arguments={"x-queue-type": "stream"})


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

    Declared before the first publish: a topic exchange drops what no queue is bound to.
    A consumer that starts or stops lagging moves between its queue's own bindings and the
    translator's, the new path bound before the old is unbound, so a message published
    meanwhile reaches the consumer once or twice (its inbox drops the second), never not;
    and in order (``_translator_queues_left``)."""
    channel = connection.default_channel
    for exchange in (EVENTS, COMMANDS, TRANSLATED, DEAD):
        exchange(channel).declare()
    # The broker's dead-letter queue, and the contexts' Celery task queues (declared by
    # their workers too, with the same arguments), where an older deployment made them classic.
    for queue in (DEAD_QUEUE, *settings.CELERY_TASK_QUEUES):
        _declare_replicated(connection, queue)
    if settings.WAYBILL_HISTORY == "stream":
        # Bound before any consumer's queue, so that it holds all any of them was sent.
        history_queue()(channel).declare()
    lags = lagging()
    for context in contexts.all_contexts():
        lags_now = context.name in lags
        if lags_now:
            check_lagging(context, lags[context.name])
        lagged = [] if lags_now else _translator_queues_left(connection, context)
        for partition in partitions():
            queue = context_queue(context, partition, declare=True)(channel)
            if lags_now:
                # Its copies queue up behind what came directly before: order is kept.
                translator_queue(context, partition, declare=True)(channel).declare()
            queue.declare()
            if lags_now:
                for old in _direct_bindings(context, partition):
                    queue.unbind_from(old.exchange, routing_key=old.routing_key)
            for message_type in context.retired_types:
                # Unbinding a binding that is not there is harmless (RabbitMQ answers ok).
                queue.unbind_from(EVENTS, routing_key=_partitioned(message_type, partition))
        for left in lagged:
            _retire(connection, context, left)
    for context in contexts.all_contexts():
        if not context.bindings:
            continue
        try:
            rebind(channel, context, resync=True)
        except Exception:  # noqa: BLE001 - the consumer's own job binds it within seconds
            # Its database may not answer (embedded, every relay declares too): no reason to
            # keep every other context off the bus. Durable bindings made earlier stay.
            log.exception("bindings of %s not reconciled now; its consumer's job retries", context.name)


class LagNotEnded(Exception):
    """A consumer listed as lagging no more cannot be moved back to its own bindings now
    without its messages overtaking each other."""


def _translator_queues_left(connection: Connection, context: contexts.BoundedContext) -> list[Queue]:
    """The translator queues of a consumer that lagged until now and lags no more, once it
    is safe to retire them: none of them holds a message or has a consumer. A message
    still there (or held by the translator) would reach the consumer after a later one of
    its aggregate that came directly. So the way back is: stop the producers' relays (their
    outboxes keep what they would publish), let the translator empty its queues, stop it,
    declare, start the relays. Refused otherwise, before anything changed (``LagNotEnded``)."""
    left = []
    for partition in partitions():
        queue = translator_queue(context, partition, declare=True)
        with _own_channel(connection) as channel:
            try:
                state = queue(channel).queue_declare(passive=True)
            except connection.channel_errors:
                continue  # it did not lag
        if state.message_count or state.consumer_count:
            raise LagNotEnded(
                f"{context.name} still lags: {queue.name} holds {state.message_count} messages and has "
                f"{state.consumer_count} consumers. Stop the producers' relays, let its translator empty it, stop "
                f"the translator, then declare the topology again (or keep it in WAYBILL_LAGGING)")
        left.append(queue)
    return left


def _retire(connection: Connection, context: contexts.BoundedContext, queue: Queue) -> None:
    """Unbind and delete a translator queue, the consumer's own bindings made already."""
    with _own_channel(connection) as channel:
        for old in queue.bindings:
            channel.queue_unbind(queue=queue.name, exchange=old.exchange.name, routing_key=old.routing_key)
        if left := queue(channel).queue_declare(passive=True).message_count:
            # Published between the count in _translator_queues_left and the consumer's own
            # bindings: kept (nothing is deleted) for the translator to deliver.
            raise LagNotEnded(
                f"{left} messages for {context.name} reached {queue.name} while it was retired (were the relays "
                f"stopped?): list it in WAYBILL_LAGGING again and run its translator until it is empty, then retry")
        channel.queue_delete(queue=queue.name)


@contextlib.contextmanager
def _own_channel(connection: Connection):
    # A channel of its own: asking for a queue that is not there closes the channel.
    channel = connection.channel()
    try:
        yield channel
    finally:
        with contextlib.suppress(Exception):
            channel.close()


# --- consumers whose code lags behind their producers ------------------------------------
def lagging() -> dict[str, dict[str, int]]:
    """``WAYBILL_LAGGING`` read (``manifest.parse_lagging``): consumer -> {message type: the
    version its code reads}."""
    try:
        return manifests.parse_lagging(settings.WAYBILL_LAGGING)
    except ValueError as refused:
        raise ImproperlyConfigured(f"WAYBILL_LAGGING: {refused}") from None


def check_lagging(context: contexts.BoundedContext, pins: dict[str, int]) -> None:
    """Refuse, before anything is bound, a lag the translator could not serve."""
    problems = []
    if context.bindings:
        problems.append("its bindings are chosen at run time (it converts per subscriber itself)")
    for message_type, version in sorted(pins.items()):
        if message_type not in context.consumed_types:
            problems.append(f"it does not consume {message_type}")
            continue
        try:
            spec_for(message_type, version)
        except MessageRefused as refused:
            problems.append(refused.reason)
            continue
        problems += missing_steps(message_type, version)
    if problems:
        raise ImproperlyConfigured(f"WAYBILL_LAGGING: {context.name} cannot be served a lagging version: "
                                   + "; ".join(problems))


# --- bindings chosen at run time -------------------------------------------------------------
# Set after a change to what a consumer should bind (webhooks: an endpoint registered or
# deleted), so the consumer's job in this process rebinds at its next tick instead of at its
# next poll. Other processes learn it from that poll (WAYBILL_BINDINGS_SECONDS).
_bindings_wakeups: defaultdict[str, threading.Event] = defaultdict(threading.Event)


def bindings_changed(consumer_name: str) -> None:
    _bindings_wakeups[consumer_name].set()


def bindings_wakeup(consumer_name: str) -> threading.Event:
    return _bindings_wakeups[consumer_name]


def bind_exactly(channel, context: contexts.BoundedContext, types: Iterable[str]) -> None:
    """Bind the context's queues (every partition) to exactly ``types`` among the types it
    consumes: all of them first, then unbind the others. Binding what is bound, or
    unbinding what is not, is harmless, so this can be repeated. A type the consumer has no
    handler for is refused: each of its messages would be a dead letter."""
    wanted = set(types)
    if unknown := wanted - context.consumed_events:
        raise ValueError(f"{context.name} has no handler for {sorted(unknown)}: not bound")
    # Binding first: a type that stays wanted is never unbound, not even for a moment.
    for partition in partitions():
        for message_type in sorted(wanted):
            channel.queue_bind(queue=queue_name(context.name, partition), exchange=EVENTS.name,
                               routing_key=_partitioned(message_type, partition))
    for partition in partitions():
        for message_type in sorted(context.consumed_events - wanted):
            channel.queue_unbind(queue=queue_name(context.name, partition), exchange=EVENTS.name,
                                 routing_key=_partitioned(message_type, partition))


def rebind(channel, context: contexts.BoundedContext, *, resync: bool) -> bool:
    """Run the context's bindings function with a ``bind`` on ``channel``; whether it bound."""
    assert context.bindings is not None
    return bool(context.bindings(bind=lambda types: bind_exactly(channel, context, types), resync=resync))
