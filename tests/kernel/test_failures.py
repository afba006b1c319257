"""Dead letters grouped by cause (``waybill.failures``): one cause, one fingerprint,
whatever the message; two causes, two; and a reason read without its exception (the
migration of older dead letters) groups with one that had it."""

import pytest

from waybill.failures import Failure


class ReadTimeout(Exception):
    pass


def fingerprint(reason: str, error: BaseException | None = None, message_type: str = "orders.charge_payment"):
    return Failure.of(reason, error=error).fingerprint(message_type)


@pytest.mark.parametrize(("one", "other"), [
    ("gave up after 5 attempts: ValueError: order 3f2504e0-4f89-11d3-9a0c-0305e82c3301 has 3 lines",
     "gave up after 2 attempts: ValueError: order 9b1c3f2e-1111-2222-3333-444455556666 has 12 lines"),
    ("invalid payload for orders.order_placed v2: order_id: Input should be a valid UUID, input_value='abc'",
     "invalid payload for orders.order_placed v2: order_id: Input should be a valid UUID, input_value='x y z'"),
    ("message of 2031 bytes is over WAYBILL_MESSAGE_MAX_BYTES (1500)",
     "message of 99999 bytes is over WAYBILL_MESSAGE_MAX_BYTES (1500)"),
])
def test_one_cause_is_one_group(one, other):
    assert fingerprint(one) == fingerprint(other)


@pytest.mark.parametrize(("one", "other"), [
    ('permanent failure: payment provider refused the request: 401 {"error": "unauthorized"}',
     'permanent failure: payment provider refused the request: 404 {"error": "not found"}'),
    ("gave up after 5 attempts: KeyError: 'amount'", "gave up after 5 attempts: KeyError: 'currency'"),
    ("gave up after 5 attempts: ValueError: no price", "gave up after 5 attempts: TypeError: no price"),
    ("gave up after 5 attempts: ValueError: no price", "permanent failure: no price"),
])
def test_two_causes_are_two_groups(one, other):
    assert fingerprint(one) != fingerprint(other)


def test_the_message_type_is_part_of_the_cause():
    reason = "gave up after 5 attempts: ValueError: no price"
    assert fingerprint(reason, message_type="a.b") != fingerprint(reason, message_type="a.c")


@pytest.mark.parametrize(("reason", "error"), [
    ("gave up after 5 attempts: ReadTimeout: timed out", ReadTimeout("timed out")),
    ("gave up after 2 attempts: IntegrityError in handler", None),
    ("could not be handled: KeyError: 'id'", KeyError("id")),
])
def test_a_stored_reason_groups_with_the_live_failure(reason, error):
    live = Failure.of(reason, error=error)
    stored = Failure.of(reason)
    assert stored.fingerprint("t") == live.fingerprint("t")
    assert stored.error_type == (type(error).__name__ if error else "IntegrityError")
