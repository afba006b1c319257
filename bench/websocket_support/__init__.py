"""Pieces of the live-push benchmark (``bench.websocket``): the services deployment it
runs on, the Django-side scripts that create customers and drive order events, and the
WebSocket client fleet."""
