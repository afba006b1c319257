"""The migration that made dead-letter bodies binary keeps every existing row readable."""

import pytest
from django.db import connections
from django.db.migrations.executor import MigrationExecutor

from apps.inventory.models import DeadLetter

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
BEFORE = ("inventory", "0003_inbox_index_name")  # the last with a text body


def _migrate(target=None) -> None:
    """To ``target``, or to the latest migration."""
    executor = MigrationExecutor(connections["inventory"])
    executor.loader.build_graph()
    executor.migrate([target] if target else executor.loader.graph.leaf_nodes("inventory"))


def test_an_old_text_dead_letter_becomes_its_bytes_and_a_preview():
    _migrate(BEFORE)
    try:
        old_body = '{"type": "inventory.reserve_stock", "note": "caf\u00e9 \ufffd"}' + "x" * 10_000
        with connections["inventory"].cursor() as cursor:
            cursor.execute("INSERT INTO inventory_deadletter (message_type, reason, attempts, body, routing_key, "
                           "created_at) VALUES ('', 'malformed JSON', 1, %s, '', CURRENT_TIMESTAMP)", [old_body])
    finally:
        _migrate()
    letter = DeadLetter.objects.get()
    assert bytes(letter.body) == old_body.encode() and letter.body_size == len(old_body.encode())
    assert letter.preview.startswith('{"type": "inventory.reserve_stock", "note": "caf\u00e9')
    assert "more bytes" in letter.preview and len(letter.preview) < 4200
