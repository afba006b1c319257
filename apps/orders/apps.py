from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "apps.orders"
    label = "orders"

    def ready(self) -> None:
        from waybill import contexts

        from . import handlers, models

        contexts.register(
            contexts.BoundedContext(
                name="orders",
                database="orders",
                outbox=models.OutboxMessage,
                inbox=models.InboxMessage,
                dead_letters=models.DeadLetter,
                handlers=handlers.HANDLERS,
            )
        )
