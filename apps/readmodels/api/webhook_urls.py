"""Webhook subscription routes (see apps/readmodels/webhooks)."""
urlpatterns: list = []
