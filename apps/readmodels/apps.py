from django.apps import AppConfig


class ReadModelsConfig(AppConfig):
    name = "apps.readmodels"
    label = "readmodels"
    verbose_name = "Read models"

    def ready(self) -> None:
        from waybill import contexts

        from . import handlers, models

        contexts.register(
            contexts.BoundedContext(
                name="readmodels",
                database="readmodels",
                outbox=models.OutboxMessage,
                inbox=models.InboxMessage,
                dead_letters=models.DeadLetter,
                handlers=handlers.HANDLERS,
            )
        )
