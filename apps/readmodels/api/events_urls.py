"""Server-Sent Events routes (see events.py)."""

from django.urls import path

from .events import EventsApi

urlpatterns = [path("", EventsApi.as_view(), name="events")]
