"""A what-if, not product code and not part of ``bench.relay.run``: Waybill's
``Relay.publish_batch`` with pipelined publisher confirms. It publishes every row of the
claimed batch without waiting, then waits once for the broker's (cumulative) acks and
marks the batch sent; a nack or a timeout marks nothing and raises, so the whole batch
is published again on the next pass (at least once, as now).

Used to measure the fix proposed in the relay report:

    python -m bench.relay_support.waybill_proc drain N pipelined
    python -m bench.relay_support.waybill_proc drain N lean
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import transaction

from waybill.relay import Relay


class PipelinedRelay(Relay):
    confirm_timeout = 30.0

    def _ensure_producer(self):
        fresh = self._producer is None
        producer = super()._ensure_producer()
        if fresh:
            channel = producer.channel
            # py-amqp waits for each confirm in basic_publish when the connection has
            # confirm_publish; _basic_publish is the same call without the wait.
            channel.basic_publish = channel._basic_publish
            channel.confirm_select()
            self._published = self._acked = 0
            self._nacked: list[int] = []
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(lambda tag, multiple: self._nacked.append(tag))
        return producer

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._acked = max(self._acked, delivery_tag)

    def publish_batch(self) -> int:
        ctx = self.context
        rows = ctx.outbox.objects.using(ctx.database)
        with transaction.atomic(using=ctx.database):
            claimed = list(
                rows.filter(sent_at__isnull=True, publish_attempts__lt=settings.WAYBILL_RELAY_MAX_ATTEMPTS)
                .order_by("id")
                .select_for_update(skip_locked=True)[: self.batch_size]
            )
            if not claimed:
                return 0
            publishable = self._in_commit_order(claimed)
            self._ensure_producer()
            for row in publishable:
                self._publish(row)
                self._published += 1
            deadline = time.monotonic() + self.confirm_timeout
            while self._acked < self._published and not self._nacked:
                self._connection.drain_events(timeout=max(0.1, deadline - time.monotonic()))
            if self._nacked:
                raise RuntimeError(f"broker nacked delivery tags {self._nacked[:5]}")
            self._mark_sent([row.id for row in publishable])
        return len(publishable)


class LeanPipelinedRelay(PipelinedRelay):
    """The pipelined what-if plus less work per row: rows fetched as tuples with the
    envelope as stored JSON text (no model instances, no jsonb -> dict -> JSON round trip),
    and the AMQP message built and handed to the channel directly instead of through
    Kombu's Producer.publish. The tracing span per message stays.

    ``python -m bench.relay_support.waybill_proc drain N lean``"""

    def publish_batch(self) -> int:
        from collections import namedtuple

        import amqp
        from django.db.models.expressions import RawSQL

        from waybill import bus
        from waybill.telemetry import SpanKind, span_for_message

        Row = namedtuple("Row", "id message_id message_type aggregate_id text")
        ctx = self.context
        rows = ctx.outbox.objects.using(ctx.database)
        with transaction.atomic(using=ctx.database):
            claimed = [Row(*values) for values in (
                rows.filter(sent_at__isnull=True, publish_attempts__lt=settings.WAYBILL_RELAY_MAX_ATTEMPTS)
                .order_by("id")
                .select_for_update(skip_locked=True)
                .annotate(text=RawSQL("envelope::text", []))
                .values_list("id", "message_id", "message_type", "aggregate_id", "text")[: self.batch_size]
            )]
            if not claimed:
                return 0
            publishable = self._in_commit_order(claimed)
            channel = self._ensure_producer().channel
            for row in publishable:
                # Stored with schema_version 1 for every bench row; the product would read it.
                exchange, routing_key = bus.route(row.message_type, 1, row.aggregate_id)
                with span_for_message(f"publish {row.message_type}", traceparent=None, kind=SpanKind.PRODUCER,
                                      **{"messaging.message.id": str(row.message_id)}):
                    channel._basic_publish(
                        amqp.Message(row.text, content_type=bus.JSON, content_encoding="utf-8", delivery_mode=2,
                                     message_id=str(row.message_id), application_headers={"traceparent": ""}),
                        exchange=exchange.name, routing_key=routing_key)
                self._published += 1
            deadline = time.monotonic() + self.confirm_timeout
            while self._acked < self._published and not self._nacked:
                self._connection.drain_events(timeout=max(0.1, deadline - time.monotonic()))
            if self._nacked:
                raise RuntimeError(f"broker nacked delivery tags {self._nacked[:5]}")
            self._mark_sent([row.id for row in publishable])
        return len(publishable)
