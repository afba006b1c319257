from django.apps import AppConfig
from django.conf import settings


class WaybillConfig(AppConfig):
    name = "waybill"
    verbose_name = "Waybill kernel"

    def ready(self) -> None:
        from . import opsreport, telemetry  # noqa: F401 - opsreport registers waybill.outbox_measured

        telemetry.configure(
            service_name=settings.WAYBILL_SERVICE_NAME,
            exporter=settings.WAYBILL_OTEL_EXPORTER,
            console_path=settings.WAYBILL_OTEL_CONSOLE_FILE,
        )
