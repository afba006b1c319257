"""Server-Sent Events routes (see events.py)."""
urlpatterns: list = []
