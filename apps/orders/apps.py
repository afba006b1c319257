from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "apps.orders"
    label = "orders"

    def ready(self) -> None:
        from waybill import contexts

        from . import handlers, models, payments, saga

        contexts.register(
            contexts.BoundedContext(
                name="orders",
                database="orders",
                outbox=models.OutboxMessage,
                inbox=models.InboxMessage,
                dead_letters=models.DeadLetter,
                handlers=handlers.HANDLERS,
                periodic=(saga.saga_expire_overdue,),
                # Orders follows inventory.product_listed since it was split from the
                # stock-level document.
                retired_types=("inventory.product_updated",),
            )
        )
        # The payments bulkhead: its own queue, inbox and workers; orders' outbox.
        contexts.register(
            contexts.BoundedContext(
                name="payments",
                database="orders",
                outbox=models.OutboxMessage,
                inbox=models.PaymentInboxMessage,
                dead_letters=models.PaymentDeadLetter,
                handlers=payments.HANDLERS,
                relay=False,
                # Keep trying while the saga waits; its deadline decides when to give up.
                retry_max_attempts=100,
                retry_max_seconds=5.0,
            )
        )
