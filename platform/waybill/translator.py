"""The translator: what a consumer whose code lags behind its producers reads.

During a rolling deployment a producer may publish v2 of a type while a consumer still
runs code that knows only v1 (or a consumer another team runs cannot be upgraded yet).
Listed in ``WAYBILL_LAGGING`` (``inventory:orders.order_cancelled@1``), such a consumer's
queue is fed through ``waybill.translator.<consumer>`` instead of the exchanges
(``waybill.bus``), and this translator, running the new code (the new schemas and their
downcasters), republishes each message it finds there to the consumer's queue:

- a message of a listed type newer than the consumer reads: read as that version through
  the registered steps (``waybill.messages.read_as``), the same id and everything else
  unchanged, so the consumer's inbox still drops a second delivery;
- anything else exactly as it came, bytes and properties (another type, an older
  version, a message that does not parse or that a step refuses: the consumer decides,
  and dead-letters what it cannot read, with its reason, as it would have).

Configured, not written per type: the steps are the ones registered beside the contracts.
It holds no state and no database: a message is acked only once the broker confirmed its
copy, so a crash republishes it (at least once; the consumer's inbox makes that once), and
one partition queue is translated in order, so one aggregate's messages keep theirs.

Embedded, the runtime runs a translator thread per lagging consumer and partition; in
services mode, ``manage.py runtranslator`` runs those of its context's consumers, under
the context's broker user (which may read its translator queues and publish to its own
queues' keys on ``waybill.translated`` alone: ``launcher.provision``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

from django.conf import settings
from kombu import Producer
from kombu.message import Message as KombuMessage

from . import bus
from .backoff import Reconnects, backoff_delay
from .contexts import BoundedContext
from .messages import MessageRefused, parse, read_as
from .wire import storable

log = logging.getLogger(__name__)
# Set on a copy the translator converted: the version it was published at.
TRANSLATED_FROM = "waybill-translated-from"
# The properties a copy keeps from the message as it came (the relay sets message_id).
_KEPT_PROPERTIES = ("message_id", "correlation_id", "priority", "app_id", "type", "timestamp")


def translate(pins: dict[str, int], body: bytes, content_type: str) -> tuple[bytes, int | None]:
    """What the lagging consumer is given for ``body``, and the version it was converted
    from (None: given as it came). Never raises."""
    if content_type != bus.JSON:
        return body, None
    try:
        envelope, _ = parse(body, max_bytes=settings.WAYBILL_MESSAGE_MAX_BYTES,
                            max_depth=settings.WAYBILL_MESSAGE_MAX_DEPTH)
    except MessageRefused:
        return body, None  # the consumer refuses it with the same reason, and keeps it
    pinned = pins.get(envelope.type)
    if pinned is None or envelope.schema_version <= pinned:
        return body, None
    try:
        converted, _ = read_as(envelope, pinned)
    except MessageRefused as refused:
        # As it came: the consumer dead-letters a version it cannot read, and a redrive
        # once its new code runs applies it.
        log.warning("%s %s not translated to v%d: %s", envelope.type, envelope.id, pinned, storable(refused.reason, 300))
        return body, None
    return converted.to_json().encode(), envelope.schema_version


class Translator:
    """Translates one partition of one lagging consumer's messages (see the module)."""

    # Messages held unacked at once: a few, as each is forwarded and confirmed in turn; a
    # restart gives them back to the queue, in order.
    prefetch = 16

    def __init__(self, context: BoundedContext, partition: int = 0):
        self.context = context
        self.partition = partition
        self.pins = bus.lagging()[context.name]
        bus.check_lagging(context, self.pins)
        self.target = bus.queue_name(context.name, partition)
        self._returned: list[str] = []

    def run(self, stop: threading.Event) -> None:
        reconnects = Reconnects(f"translator {self.target}", stop, log)
        while not stop.is_set():
            try:
                # Publisher confirms on (the default): publish() returns once the broker has it.
                with bus.consuming() as connection:
                    producer = Producer(connection.channel(), exchange=bus.TRANSLATED, on_return=self._on_return,
                                        auto_declare=settings.WAYBILL_BROKER_DECLARE)
                    arrived: list[KombuMessage] = []
                    with connection.Consumer([bus.translator_queue(self.context, self.partition)],
                                             on_message=arrived.append, prefetch_count=self.prefetch):
                        reconnects.succeeded()
                        while not stop.is_set():
                            connection.heartbeat_check()
                            with contextlib.suppress(socket.timeout):
                                connection.drain_events(timeout=0.25)
                            while arrived and not stop.is_set():
                                self._forward(connection, producer, arrived.pop(0), stop)
            except Exception:  # noqa: BLE001 - the broker went away: unacked messages come again
                reconnects.failed()

    def _forward(self, connection, producer: Producer, message: KombuMessage, stop: threading.Event) -> None:
        """Publish the message's copy and wait for the broker's confirm, then ack it. A copy
        no queue took (the consumer's queue is not bound to the translator's exchange: the
        topology was not declared for this lag) is published again after a pause, holding
        the ones behind it, until it is taken: nothing is dropped, and order is kept."""
        body, converted_from = translate(self.pins, message.body, message.content_type or "")
        # The producer's headers, not the broker's (x-delivery-count and the like).
        headers = {name: value for name, value in (message.headers or {}).items() if not name.startswith("x-")}
        if converted_from is not None:
            headers[TRANSLATED_FROM] = converted_from
        properties = {name: message.properties[name] for name in _KEPT_PROPERTIES if message.properties.get(name)}
        returns = 0
        while True:
            self._returned.clear()
            producer.publish(body, routing_key=self.target, content_type=message.content_type,
                             content_encoding=message.content_encoding or "utf-8", headers=headers,
                             delivery_mode=2, mandatory=True, retry=False,
                             confirm_timeout=settings.WAYBILL_RELAY_CONFIRM_TIMEOUT_SECONDS, **properties)
            if not self._returned:
                message.ack()
                return
            returns += 1
            delay = backoff_delay(returns, base=0.5, cap=30.0)
            log.error("translator: %s routes nothing to %s (%s); declare the topology for WAYBILL_LAGGING. "
                      "Publishing again in %.1fs", bus.TRANSLATED.name, self.target, self._returned[-1], delay)
            # In slices, keeping the connection's heartbeats going meanwhile.
            deadline = time.monotonic() + delay
            while (left := deadline - time.monotonic()) > 0:
                if stop.wait(min(left, 1.0)):
                    return  # unacked: it comes again
                connection.heartbeat_check()

    def _on_return(self, exception, exchange, routing_key, message) -> None:
        self._returned.append(f"{exchange} {routing_key}: {exception}")
