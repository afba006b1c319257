"""The project's URLs plus one API view that fails, for tests/test_api_limits.py."""

from django.urls import path

from config.urls import urlpatterns as project_urlpatterns


def explode(request):
    raise RuntimeError("secret-of-the-traceback")


urlpatterns = [path("api/v1/explode/", explode), *project_urlpatterns]
