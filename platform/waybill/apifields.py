"""API input taken only as the schema states it, for the contexts' views.

DRF's ``CharField`` also takes a number and keeps its digits (``{"name": 0}`` becomes
``"0"``), and a query parameter given twice counts once, while the schema says ``string``
and one value: a client reading the schema is told the rest is refused, and the attack
suite (tests/test_api_attack.py) sends it to check that it is.
"""

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A ``CharField`` that refuses anything but a string (400 "Not a valid string.")."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def single_valued(query_params) -> dict[str, str]:
    """The query string as one value per name; a name given more than once is a 400 (DRF
    and Django would silently take the last, so ``?days=abc&days=5`` passed for ``5``)."""
    repeated = sorted(name for name, values in query_params.lists() if len(values) > 1)
    if repeated:
        raise serializers.ValidationError({name: ["Give this parameter once."] for name in repeated})
    return query_params.dict()
