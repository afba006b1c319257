"""Prepare the baseline's database: migrate, a customer with an API token, the products.

``python -m bench.pipeline_support.syncshop.setup '<json>'`` where the JSON is
``{"username": ..., "products": [{"sku", "name", "price", "on_hand"}]}``; prints
``{"token": ...}`` on its last line. Same environment as the server (see settings)."""

import json
import os
import sys

os.environ.setdefault("WAYBILL_CONTEXTS", "orders,inventory")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.pipeline_support.syncshop.settings")

import django  # noqa: E402

django.setup()

from decimal import Decimal  # noqa: E402

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from apps.inventory.models import Product  # noqa: E402


def main(spec: dict) -> dict:
    call_command("migrate", verbosity=0, interactive=False)
    user, _ = get_user_model().objects.get_or_create(username=spec["username"])
    token, _ = Token.objects.get_or_create(user=user)
    for product in spec["products"]:
        Product.objects.update_or_create(sku=product["sku"], defaults={
            "name": product["name"], "price": Decimal(product["price"]), "on_hand": product["on_hand"]})
    return {"token": token.key}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
