from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "apps.inventory"
    label = "inventory"

    def ready(self) -> None:
        from waybill import contexts

        from . import handlers, models

        contexts.register(
            contexts.BoundedContext(
                name="inventory",
                database="inventory",
                outbox=models.OutboxMessage,
                inbox=models.InboxMessage,
                dead_letters=models.DeadLetter,
                handlers=handlers.HANDLERS,
            )
        )
