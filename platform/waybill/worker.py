"""The event consumer inside a Celery worker: a consumer bootstep that takes each hosted
consumer's queues and hands every message to ``ContextConsumer.on_message``, which acks
only after the handler's transaction committed. Celery gives it the worker's supervised
broker connection, reconnects and clean shutdown.

The same step runs the kernel's scheduler (``waybill.scheduler``) for exactly the
consumers this worker hosts, one thread each: a bulkhead's retries and jobs (payments)
stay in the bulkhead's own worker, and the context's main worker also runs the relay's
backstop. Threads, not the worker's timer: with RabbitMQ the timer runs on the thread that
delivers messages, so a slow job (a backstop drain waiting for confirms) would stop
consuming, and one scheduler's job would delay another's (saga deadlines). Celery stops
the step while the broker is unreachable, and the schedulers with it (the saga clock
counts on that).
"""

import logging
import threading

from celery import Celery, bootsteps
from django.conf import settings
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
        super().start(c)
        self._schedulers_stop = threading.Event()
        self._scheduler_threads = [
            threading.Thread(target=scheduler.run, args=(self._schedulers_stop,), daemon=True,
                             name=f"scheduler-{consumer.context.name}")
            for consumer, scheduler in zip(self.context_consumers, self.schedulers)
        ]
        for thread in self._scheduler_threads:
            thread.start()

    def stop(self, c):
        for consumer in getattr(self, "context_consumers", ()):
            consumer.stop.set()  # one waiting for its database gives the message back unacked
        if (stop := getattr(self, "_schedulers_stop", None)) is not None:
            stop.set()
            for thread in self._scheduler_threads:
                # A job in flight finishes first (each is short, or bounded by its timeouts).
                thread.join(timeout=15)
        for consumer in getattr(self, "context_consumers", ()):
            consumer.close()  # once its scheduler (which rebinds through it) has stopped
        super().stop(c)


def install(app: Celery) -> None:
    app.steps["consumer"].add(ContextEventConsumer)
