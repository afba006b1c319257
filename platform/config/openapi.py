"""The OpenAPI schema says what the API really answers, refusals included.

``ApiSchema`` (DRF's ``DEFAULT_SCHEMA_CLASS``) is drf-spectacular's ``AutoSchema`` plus:

- Each operation lists the refusals its view can give, derived from what the view is made
  of, so no view repeats them: 400 where it reads a body or query parameters, 401 where it
  authenticates, 403 where a permission beyond signing in decides (or a browser session's
  CSRF check does, on writes), 404 where the path names something, 413 and 415 where it
  reads a body (``config.api.BoundedJSONParser``, its parsers' media types), 429 where a
  throttle counts, 503 everywhere (``config.api``: a database that does not answer). What a
  view declares itself (409, 412, a 400 of its own, its wording) wins; the derived ones
  fill in the rest.
- Every refusal has a body schema: ``Error`` (``{"detail": ...}``, what DRF's exception
  handler and ``config.api.json_error`` give) or, for 400, also ``ValidationError`` (each
  field's reasons under its name, nested as the serializers nest).
- Fields say what their serializer field checks where drf-spectacular leaves it out: a
  list's length (``allow_empty``, ``min_length``, ``max_length``) and a decimal string
  that is not empty and, at ``min_value`` 0 or more, has no sign.

A client, and the attack suite (tests/test_api_attack.py), can then hold every answer to
the schema.
"""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent, is_list_serializer
from rest_framework import permissions, serializers
from rest_framework.authentication import SessionAuthentication

from .api import DATABASE_UNAVAILABLE

ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string", "description": "What was refused, and why."}},
    "required": ["detail"],
}
# DRF's validation errors: a field's reasons (a list of strings), a nested serializer's
# errors (an object, recursively), or a list of them (one per item of a many=True list,
# ``{}`` for an item without errors); ``non_field_errors`` for reasons of no one field.
VALIDATION_ERROR = {
    "type": "object",
    "description": 'Each field\'s reasons under its name, nested as the request is: '
                   '`{"lines": {"0": {"sku": ["Unknown SKU LAMP-9."]}}}`.',
    "additionalProperties": {"$ref": "#/components/schemas/FieldError"},
}
FIELD_ERROR = {
    "anyOf": [
        {"type": "array", "items": {"anyOf": [{"type": "string"}, {"$ref": "#/components/schemas/ValidationError"}]}},
        {"$ref": "#/components/schemas/ValidationError"},
    ],
}
COMPONENTS = {"Error": ERROR, "ValidationError": VALIDATION_ERROR, "FieldError": FIELD_ERROR}

RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer", "minimum": 0},
                               "description": "Seconds to wait before sending the request again."}}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"schema": {"type": "string"},
                                         "description": "How to authenticate: `Token`."}}
# Where a throttle's 429 or a database's 503 tell the client when to come back.
HEADERS = {401: WWW_AUTHENTICATE, 429: RETRY_AFTER, 503: RETRY_AFTER}

# Permissions whose refusal is "sign in first" (401), never a 403 of their own.
_SIGN_IN_ONLY = (permissions.AllowAny, permissions.IsAuthenticated)


class ApiSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        for name, schema in COMPONENTS.items():
            registry.register_on_missing(ResolvedComponent(
                name=name, type=ResolvedComponent.SCHEMA, object=f"config.openapi.{name}", schema=schema))
        responses = operation["responses"]
        for code, description in self.refusals(operation).items():
            responses.setdefault(str(code), {"description": description})
        for code, response in responses.items():
            if int(code) >= 400:
                self._describe_refusal(int(code), response)
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def refusals(self, operation: dict) -> dict[int, str]:
        """The statuses this operation's view can refuse with, from what the view is made
        of, each with what it means here."""
        view = self.view
        parameters = {parameter["in"] for parameter in operation.get("parameters", ())}
        body = "requestBody" in operation
        found = {}
        if body or "query" in parameters:
            found[400] = "Malformed request: each field's reasons under its name (or a body that is not JSON)."
        authenticators = view.get_authenticators()
        if authenticators:
            found[401] = "Not signed in, or a token that is not valid: send `Authorization: Token <key>`."
        checks = [permission for permission in view.get_permissions() if not isinstance(permission, _SIGN_IN_ONLY)]
        if checks:
            found[403] = "Not allowed to you: " + ", ".join(_permission_reason(permission) for permission in checks)
        elif self.method not in permissions.SAFE_METHODS and any(
                isinstance(authenticator, SessionAuthentication) for authenticator in authenticators):
            found[403] = "A browser session's write without its CSRF token."
        if "path" in parameters:
            found[404] = "No such thing here (or not yours)."
        if body:
            found[413] = "Request body over the limit (WAYBILL_REQUEST_MAX_BYTES)."
            media_types = sorted({parser.media_type for parser in view.get_parsers()})
            found[415] = f"Content-Type not one of {', '.join(media_types)}."
        if view.get_throttles():
            found[429] = "Too many requests; Retry-After says when to try again."
        found[503] = DATABASE_UNAVAILABLE
        return found

    def _describe_refusal(self, code: int, response: dict) -> None:
        schema = {"$ref": "#/components/schemas/Error"}
        if code == 400:
            schema = {"anyOf": [{"$ref": "#/components/schemas/ValidationError"}, schema]}
        response.setdefault("content", {"application/json": {"schema": schema}})
        if code in HEADERS:
            response["headers"] = {**HEADERS[code], **response.get("headers", {})}

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if is_list_serializer(field) and schema.get("type") == "array":
            least = max(0 if field.allow_empty else 1, field.min_length or 0)
            if least:
                schema["minItems"] = least
            if field.max_length is not None:
                schema["maxItems"] = field.max_length
        elif isinstance(field, serializers.DecimalField) and schema.get("format") == "decimal" \
                and "pattern" in schema and field.max_whole_digits:
            schema["pattern"] = _decimal_pattern(field)
        return schema


def _decimal_pattern(field: serializers.DecimalField) -> str:
    """The decimal strings ``field`` takes in plain notation: at least one digit, at most
    its whole and decimal digits, and no minus sign where it takes nothing below 0."""
    sign = "" if field.min_value is not None and field.min_value >= 0 else "-?"
    whole, places = field.max_whole_digits, field.decimal_places
    return rf"^{sign}(?:\d{{1,{whole}}}(?:\.\d{{0,{places}}})?|\.\d{{1,{places}}})$"


def _permission_reason(permission) -> str:
    if isinstance(permission, permissions.IsAdminUser):
        return "staff only."
    return (permission.__doc__ or type(permission).__name__).strip().splitlines()[0]
