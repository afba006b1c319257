"""The event consumer inside a Celery worker: a consumer bootstep that takes each hosted
consumer's queues and hands every message to ``ContextConsumer.on_message``, which acks
only after the handler's transaction committed. Celery gives it the worker's supervised
broker connection, reconnects and clean shutdown.

The same step drives the kernel's scheduler (``waybill.scheduler``) from the worker's
timer, for exactly the consumers this worker hosts: a bulkhead's retries and jobs
(payments, webhooks) stay in the bulkhead's own worker, and the context's main worker also
runs the relay's backstop. Celery stops the step while the broker is unreachable, and the
scheduler with it (the saga clock counts on that).
"""

import logging

from celery import Celery, bootsteps
from django.conf import settings
from django.db import close_old_connections
from kombu import Consumer

from . import bus, contexts

log = logging.getLogger(__name__)


def _hosted():
    return [
        context for context in contexts.all_contexts()
        if context.handlers and (not settings.WAYBILL_CONSUMERS or context.name in settings.WAYBILL_CONSUMERS)
    ]


class ContextEventConsumer(bootsteps.ConsumerStep):
    def get_consumers(self, channel):
        # Models: only once Django is set up.
        from .consumer import ContextConsumer
        from .scheduler import scheduler_for

        # Not ``self.consumers``: ConsumerStep keeps the Kombu consumers under that name.
        self.context_consumers = [ContextConsumer(context) for context in _hosted()]
        self.schedulers = [scheduler_for(consumer, relay_backstop=True) for consumer in self.context_consumers]
        return [
            Consumer(
                channel,
                # Every partition: RabbitMQ keeps one active consumer per partition queue
                # across all workers, the others standing by.
                queues=bus.context_queues(consumer.context),
                on_message=consumer.on_message,
                accept=[bus.JSON],
                prefetch_count=settings.WAYBILL_CONSUMER_PREFETCH,
            )
            for consumer in self.context_consumers
        ]

    def start(self, c):
        from .scheduler import TICK_SECONDS

        super().start(c)
        self._timer = c.timer.call_repeatedly(TICK_SECONDS, self._tick)

    def stop(self, c):
        for consumer in getattr(self, "context_consumers", ()):
            consumer.stop.set()  # one waiting for its database gives the message back unacked
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
        super().stop(c)

    def _tick(self):
        # The timer's thread is long-lived: it must notice a database connection that died
        # or outlived CONN_MAX_AGE. Each job is guarded by its scheduler.
        try:
            close_old_connections()
        except Exception:
            log.exception("could not close old database connections")
        for scheduler in self.schedulers:
            scheduler.run_due()


def install(app: Celery) -> None:
    app.steps["consumer"].add(ContextEventConsumer)
