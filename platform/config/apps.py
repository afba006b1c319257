from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The composition root: it may know every context (urls, demo data); nothing knows it."""

    name = "config"
    label = "waybill_project"
    verbose_name = "Waybill project"
