from django.conf import settings
from rest_framework import serializers

from waybill.api import StrictCharField


# Shapes only: whether a SKU is sold, and named once, is the service's decision
# (services.order_place), answered as the same 400 field errors.
class LineInput(serializers.Serializer):
    sku = StrictCharField(max_length=64, help_text="A SKU from the catalog; each SKU on one line only.")
    quantity = serializers.IntegerField(min_value=1, max_value=settings.WAYBILL_ORDER_MAX_QUANTITY)


class OrderPlaceInput(serializers.Serializer):
    lines = LineInput(
        many=True, allow_empty=False, max_length=settings.WAYBILL_ORDER_MAX_LINES,
        help_text=(
            f"1 to {settings.WAYBILL_ORDER_MAX_LINES} lines, one per SKU, each of 1 to "
            f"{settings.WAYBILL_ORDER_MAX_QUANTITY} units."
        ),
    )


class OrderLineOutput(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    quantity = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=10, decimal_places=2)


class OrderOutput(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    reason = serializers.CharField()
    version = serializers.IntegerField()
    total = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField(help_text="ISO 4217, of the total and of every line's unit price.")
    lines = OrderLineOutput(many=True, source="lines.all")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    summary_url = serializers.SerializerMethodField(help_text="Where the outcome shows up on the read side.")

    def get_summary_url(self, order) -> str:
        return f"/api/v1/read/orders/{order.id}/"
