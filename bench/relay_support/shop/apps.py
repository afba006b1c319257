from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "bench.relay_support.shop"
    label = "bench_shop"
    default_auto_field = "django.db.models.BigAutoField"
