"""The synchronous baseline: the order domain in ONE request and ONE database transaction.

A Django settings module that reuses Waybill's settings (middleware, DRF token auth, the
orders and inventory models) with a single PostgreSQL database and no router, plus one
extra view, served by uvicorn like Waybill's web processes. No outbox, no broker, no
read model: see ``views.SyncOrderPlaceApi`` for exactly what one request does.
"""
