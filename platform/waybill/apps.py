from django.apps import AppConfig, apps
from django.conf import settings
from django.db.models.signals import post_migrate


class WaybillConfig(AppConfig):
    name = "waybill"
    verbose_name = "Waybill kernel"

    def ready(self) -> None:
        from . import contexts, opsreport, telemetry  # noqa: F401 - opsreport registers waybill.outbox_measured

        # Every hosted context, from its manifest: a context's package needs no AppConfig
        # of its own (Django makes a plain one, labelled with the package's name).
        for name in settings.WAYBILL_CONTEXTS:
            declared = settings.WAYBILL_MANIFESTS[name]
            contexts.register_manifest(declared)
            apps.get_app_config(name).verbose_name = declared.title
        # The console's groups, whenever the identity store is migrated.
        post_migrate.connect(_console_groups, sender=self)
        telemetry.configure(
            service_name=settings.WAYBILL_SERVICE_NAME,
            exporter=settings.WAYBILL_OTEL_EXPORTER,
            console_path=settings.WAYBILL_OTEL_CONSOLE_FILE,
        )


def _console_groups(sender, using, **kwargs) -> None:
    from . import rights

    if using == "default":
        rights.ensure_groups(using=using)
