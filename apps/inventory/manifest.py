"""Inventory: products, stock and reservations."""

from waybill.manifest import Consumer, Context

CONTEXT = Context(
    name="inventory",
    api={"inventory/": "apps.inventory.api.urls"},
    consumers=(Consumer("inventory", handlers="apps.inventory.handlers:HANDLERS"),),
)
