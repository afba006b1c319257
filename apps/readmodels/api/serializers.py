from rest_framework import serializers


class SummaryLineOutput(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    quantity = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=10, decimal_places=2)


class OrderSummaryOutput(serializers.Serializer):
    id = serializers.UUIDField(source="order_id")
    status = serializers.CharField()
    reason = serializers.CharField()
    lines = SummaryLineOutput(many=True)
    total = serializers.DecimalField(max_digits=12, decimal_places=2)
    version = serializers.IntegerField()
    updated_at = serializers.DateTimeField()


class CatalogItemOutput(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    price = serializers.DecimalField(max_digits=10, decimal_places=2)
    available = serializers.IntegerField()
    version = serializers.IntegerField()
