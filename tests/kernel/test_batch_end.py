"""``at_batch_end``: what handlers leave for the end of a consumer's batch is written once
per key, with the last value still standing, and what was left inside a savepoint that
rolled back is not written."""

import pytest
from django.db import transaction

from waybill.batchend import at_batch_end, batch_end, gathered_at_batch_end

pytestmark = pytest.mark.django_db(transaction=True, databases=["inventory"])
DB = "inventory"


class Failed(Exception):
    pass


def _recorder():
    written = []
    return written, lambda key, value: written.append((key, value))


def test_outside_a_batch_the_write_happens_at_once():
    written = []
    assert at_batch_end(lambda key, value: written.append((key, value)) or "done", "k", 1) == "done"
    assert gathered_at_batch_end(lambda key, items: written.append((key, items)), "g", 2) is None
    assert written == [("k", 1), ("g", [2])]


def test_each_key_is_written_once_with_its_last_value_keys_in_order():
    written, write = _recorder()
    with transaction.atomic(using=DB), batch_end(using=DB) as end:
        at_batch_end(write, "order-2", 1)
        at_batch_end(write, "order-1", 1)
        at_batch_end(write, "order-2", 2)
        assert written == []
        end.run()
    assert written == [("order-1", 1), ("order-2", 2)]  # by key: the same lock order in every batch


def test_what_was_left_in_a_savepoint_that_rolled_back_is_not_written():
    written, write = _recorder()
    gathered, gather = _recorder()
    with transaction.atomic(using=DB), batch_end(using=DB) as end:
        at_batch_end(write, "order-1", 1)
        gathered_at_batch_end(gather, "orders", "first")
        with pytest.raises(Failed), transaction.atomic(using=DB):  # a failed message's savepoint
            at_batch_end(write, "order-1", 2)
            at_batch_end(write, "order-2", 1)
            gathered_at_batch_end(gather, "orders", "failed")
            raise Failed
        try:  # a handler's own inner savepoint that failed, the handler going on
            with transaction.atomic(using=DB):
                gathered_at_batch_end(gather, "orders", "undone")
                raise Failed
        except Failed:
            pass
        gathered_at_batch_end(gather, "orders", "last")
        end.run()
    assert written == [("order-1", 1)]  # its last value still standing
    assert gathered == [("orders", ["first", "last"])]
