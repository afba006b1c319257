"""The event consumer inside a Celery worker: a consumer bootstep that takes each hosted
context's queue and hands every message to ``ContextConsumer.on_message``, which acks only
after the handler's transaction committed. Celery gives it the worker's supervised broker
connection, reconnects and clean shutdown."""

from celery import Celery, bootsteps
from django.conf import settings
from kombu import Consumer

from . import bus, contexts


class ContextEventConsumer(bootsteps.ConsumerStep):
    def get_consumers(self, channel):
        from .consumer import ContextConsumer  # models: only once Django is set up

        consumers = []
        for context in contexts.all_contexts():
            if not context.handlers:
                continue
            if settings.WAYBILL_CONSUMERS and context.name not in settings.WAYBILL_CONSUMERS:
                continue  # another worker process (a bulkhead) consumes this one
            consumers.append(
                Consumer(
                    channel,
                    # Every partition: RabbitMQ keeps one active consumer per partition queue
                    # across all workers, the others standing by.
                    queues=bus.context_queues(context),
                    on_message=ContextConsumer(context).on_message,
                    accept=[bus.JSON],
                    prefetch_count=settings.WAYBILL_CONSUMER_PREFETCH,
                )
            )
        return consumers


def install(app: Celery) -> None:
    app.steps["consumer"].add(ContextEventConsumer)
