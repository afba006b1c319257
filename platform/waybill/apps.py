from django.apps import AppConfig


class WaybillConfig(AppConfig):
    name = "waybill"
    verbose_name = "Waybill kernel"
