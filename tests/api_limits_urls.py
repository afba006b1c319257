"""The project's URLs plus one API view that fails, for tests/test_api_limits.py."""

from django.db import OperationalError
from django.urls import path

from config.urls import urlpatterns as project_urlpatterns


def explode(request):
    raise RuntimeError("secret-of-the-traceback")


def database_gone(request):
    raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")


urlpatterns = [path("api/v1/explode/", explode), path("api/v1/database-gone/", database_gone),
               *project_urlpatterns]
