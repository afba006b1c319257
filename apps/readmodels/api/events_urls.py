"""Server-Sent Events routes (the view: live/sse.py)."""

from django.urls import path

from ..live.sse import EventsApi

urlpatterns = [path("", EventsApi.as_view(), name="events")]
