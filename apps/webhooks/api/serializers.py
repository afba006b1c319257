from rest_framework import serializers

from ..events import EVENT_TYPES


class WebhookEndpointRegisterInput(serializers.Serializer):
    url = serializers.URLField(max_length=2000, help_text="https:// (http:// only to loopback, in development)")
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_TYPES), min_length=1, max_length=len(EVENT_TYPES),
        help_text="Message types to receive; stock events (inventory.*, but product_listed) are for staff only.",
    )
    schema_versions = serializers.DictField(
        child=serializers.IntegerField(min_value=1), required=False,
        help_text="The schema version to receive each type's data in, by type (see /api/asyncapi/); "
                  "a type not named gets its newest version. Fixed for the endpoint's life.",
    )


class WebhookEndpointOutput(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.URLField()
    event_types = serializers.ListField(child=serializers.CharField())
    schema_versions = serializers.SerializerMethodField(help_text=(
        "The schema version each type's data is sent in (the body's schema_version), by type."))
    receiving = serializers.BooleanField(help_text=(
        "Whether its events are coming: false for a moment after registration (usually well "
        "under a second), until the bus brings it every type it asked for. Events before that are not sent."))
    created_at = serializers.DateTimeField()


    def get_schema_versions(self, endpoint) -> dict[str, int]:
        return {message_type: endpoint.schema_version_for(message_type) for message_type in endpoint.event_types}


class WebhookEndpointCreatedOutput(WebhookEndpointOutput):
    secret = serializers.CharField(help_text="Shown this once: keep it to verify signatures.")


class WebhookDeliveryOutput(serializers.Serializer):
    id = serializers.UUIDField(help_text="Sent as Waybill-Webhook-Id; the same on every retry.")
    message_id = serializers.UUIDField(help_text="The event's id (the body's `id`).")
    event_type = serializers.CharField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_response_ms = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField(help_text=(
        "What went wrong, as a class only: timeout, connection refused, connection failed, TLS error, "
        "name not resolved, address not allowed, HTTP <status>, ...; never what the receiver answered."))
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)
