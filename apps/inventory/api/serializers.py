from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers

from waybill.api import StrictCharField

from ..models import sku_validator


class ProductCreateInput(serializers.Serializer):
    sku = StrictCharField(max_length=64, validators=[sku_validator])
    name = StrictCharField(max_length=200)
    price = serializers.DecimalField(max_digits=10, decimal_places=2, min_value=0)
    on_hand = serializers.IntegerField(min_value=0, max_value=1_000_000)


class ProductUpdateInput(serializers.Serializer):
    on_hand = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)
    name = StrictCharField(max_length=200, required=False)
    price = serializers.DecimalField(max_digits=10, decimal_places=2, min_value=0, required=False)

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Give at least one of on_hand, name, price.")
        return attrs


class ProductUpdateInputSchema(OpenApiSerializerExtension):
    """The schema says what ``validate`` refuses: a change that names no field."""

    target_class = ProductUpdateInput

    def map_serializer(self, auto_schema, direction):
        return {**auto_schema._map_basic_serializer(self.target, direction), "minProperties": 1}


class ProductOutput(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    price = serializers.DecimalField(max_digits=10, decimal_places=2)
    on_hand = serializers.IntegerField()
    reserved = serializers.IntegerField()
    available = serializers.IntegerField()
    version = serializers.IntegerField()


class StockEntryOutput(serializers.Serializer):
    version = serializers.IntegerField()
    kind = serializers.CharField()
    on_hand_delta = serializers.IntegerField()
    reserved_delta = serializers.IntegerField()
    order_id = serializers.UUIDField(allow_null=True)
    recorded_at = serializers.DateTimeField()


class StockLedgerOutput(serializers.Serializer):
    sku = serializers.CharField()
    on_hand = serializers.IntegerField(help_text="What the ledger folds to (`manage.py stock_fold_check` compares "
                                                 "it with the product's row).")
    reserved = serializers.IntegerField()
    version = serializers.IntegerField()
    entries = StockEntryOutput(many=True, help_text="The latest entries, newest first (at most 200).")
