from django.apps import AppConfig


class ReadModelsConfig(AppConfig):
    name = "apps.readmodels"
    label = "readmodels"
    verbose_name = "Read models"

    def ready(self) -> None:
        from waybill import contexts

        from . import handlers, models, services
        from .webhooks import handlers as webhook_handlers
        from .webhooks import models as webhook_models
        from .webhooks import services as webhook_services

        contexts.register(
            contexts.BoundedContext(
                name="readmodels",
                database="readmodels",
                outbox=models.OutboxMessage,
                inbox=models.InboxMessage,
                dead_letters=models.DeadLetter,
                handlers=handlers.HANDLERS,
                # Pushes the operations dashboard, coalesced: at most once a second; and
                # forgets change-log entries past their retention.
                periodic=(services.dashboard_publish, services.changes_prune_due),
            )
        )
        # The webhooks bulkhead: its own queue, inbox and workers, so a slow receiver never
        # holds up the projector. It records deliveries; its periodic job sends them.
        contexts.register(
            contexts.BoundedContext(
                name="webhooks",
                database="readmodels",
                outbox=models.OutboxMessage,
                inbox=webhook_models.WebhookInbox,
                dead_letters=webhook_models.WebhookDeadLetter,
                handlers=webhook_handlers.HANDLERS,
                relay=False,
                # Sends what is due; forgets finished deliveries past their retention.
                periodic=(webhook_services.webhook_deliveries_send_due, webhook_services.webhook_deliveries_prune_due),
            )
        )
