"""The event consumer inside a Celery worker: a consumer bootstep that takes each hosted
consumer's queues and hands every message to ``ContextConsumer.on_message``, which acks
only after the handler's transaction committed. Celery gives it the worker's supervised
broker connection, reconnects and clean shutdown.

The same step sweeps, about every second, the due inbox retries and periodic work (saga
deadlines) of exactly the consumers this worker runs: a bulkhead's retries (payments) stay
in the bulkhead's own worker.
"""

import logging

from celery import Celery, bootsteps
from django.conf import settings
from kombu import Consumer

from . import bus, contexts

log = logging.getLogger(__name__)
SWEEP_SECONDS = 1.0


def _hosted():
    return [
        context for context in contexts.all_contexts()
        if context.handlers and (not settings.WAYBILL_CONSUMERS or context.name in settings.WAYBILL_CONSUMERS)
    ]


class ContextEventConsumer(bootsteps.ConsumerStep):
    def get_consumers(self, channel):
        from .consumer import ContextConsumer  # models: only once Django is set up

        self.sweepers = [ContextConsumer(context) for context in _hosted()]
        return [
            Consumer(
                channel,
                # Every partition: RabbitMQ keeps one active consumer per partition queue
                # across all workers, the others standing by.
                queues=bus.context_queues(sweeper.context),
                on_message=sweeper.on_message,
                accept=[bus.JSON],
                prefetch_count=settings.WAYBILL_CONSUMER_PREFETCH,
            )
            for sweeper in self.sweepers
        ]

    def start(self, c):
        super().start(c)
        self._timer = c.timer.call_repeatedly(SWEEP_SECONDS, self._sweep)

    def stop(self, c):
        for sweeper in getattr(self, "sweepers", ()):
            sweeper.stop.set()  # one waiting for its database gives the message back unacked
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
        super().stop(c)

    def _sweep(self):
        for sweeper in self.sweepers:
            try:
                sweeper.sweep()
            except Exception:
                log.exception("sweep of %s failed", sweeper.context.name)


def install(app: Celery) -> None:
    app.steps["consumer"].add(ContextEventConsumer)
