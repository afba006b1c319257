from django.apps import AppConfig


class FrontendConfig(AppConfig):
    """The shell page; no business logic. It talks to the API like any client."""

    name = "frontend"
