"""``at_batch_end``: what handlers leave for the end of a consumer's batch is written once
per key, with the last value, and a failed message takes back what it left."""

from waybill.batchend import at_batch_end, batch_end, gathered_at_batch_end


def test_outside_a_batch_the_write_happens_at_once():
    written = []
    assert at_batch_end(lambda key, value: written.append((key, value)) or "done", "k", 1) == "done"
    assert written == [("k", 1)]


def test_in_a_batch_each_key_is_written_once_with_its_last_value_in_the_order_last_touched():
    written = []

    def write(key, value):
        written.append((key, value))

    with batch_end() as end:
        at_batch_end(write, "order-1", 1)
        at_batch_end(write, "order-2", 1)
        at_batch_end(write, "order-1", 2)
        assert written == []
        end.run()
    assert written == [("order-2", 1), ("order-1", 2)]


def test_a_restored_mark_takes_back_what_a_failed_message_left():
    written = []
    with batch_end() as end:
        at_batch_end(lambda key, value: written.append((key, value)), "order-1", 1)
        mark = end.mark()
        at_batch_end(lambda key, value: written.append((key, value)), "order-2", 5)
        end.restore(mark)
        end.run()
    assert [key for key, _ in written] == ["order-1"]


def test_gathered_items_are_written_together_once_and_a_failed_message_takes_its_own_back():
    written = []

    def write(key, items):
        written.append((key, list(items)))

    assert gathered_at_batch_end(write, "orders", "alone") is None and written == [("orders", ["alone"])]
    written.clear()
    with batch_end() as end:
        gathered_at_batch_end(write, "orders", 1)
        mark = end.mark()
        gathered_at_batch_end(write, "orders", 2)
        end.restore(mark)  # the second message failed
        gathered_at_batch_end(write, "orders", 3)
        end.run()
    assert written == [("orders", [1, 3])]
