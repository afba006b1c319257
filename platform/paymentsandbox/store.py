"""Durable sandbox state in one SQLite file: charges, refunds and idempotency records.

Every request opens its own connection (sqlite3 connections are not shared across the
server's threads, and opening one is cheap). Each idempotent operation runs in one
``BEGIN IMMEDIATE`` transaction that takes SQLite's write lock up front: two requests
with the same new key cannot both miss the lookup, because the second one waits (up to
the busy timeout) until the first has committed its charge and its stored response.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable, Iterator

DECLINE_FROM, DECLINE_TO = 2000_00, 2999_99  # cents, inclusive: the documented decline rule

SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    id TEXT PRIMARY KEY,
    amount_cents INTEGER NOT NULL CHECK (amount_cents > 0),
    currency TEXT NOT NULL,
    reference TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'declined')),
    decline_code TEXT,
    created_at TEXT NOT NULL,
    refund_id TEXT REFERENCES refunds (id)
);
CREATE INDEX IF NOT EXISTS charges_reference ON charges (reference);
CREATE TABLE IF NOT EXISTS refunds (
    id TEXT PRIMARY KEY,
    reference TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('refunded', 'nothing_to_refund')),
    amount_cents INTEGER NOT NULL,
    currency TEXT,
    created_at TEXT NOT NULL
);
-- The primary key is the last line of defence against a second execution per key.
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


class InvalidRequest(Exception):
    """A 400: the request names a bad field. Raised inside a transaction, it rolls back."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _charge_json(row: sqlite3.Row) -> dict:
    return {
        "id": row["id"],
        "status": row["status"],
        "amount": money(row["amount_cents"]),
        "currency": row["currency"],
        "reference": row["reference"],
        "decline_code": row["decline_code"],
        "created_at": row["created_at"],
    }


class Store:
    def __init__(self, data_dir: Path | str, busy_timeout: float = 30.0):
        self.path = Path(data_dir) / "payments.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout = busy_timeout
        with closing(self._connect()) as db:
            # WAL: readers (GET, stats) never wait for a writer. The mode is persistent.
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; we say BEGIN/COMMIT ourselves.
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def idempotent(
        self, key: str, fingerprint: str, execute: Callable[[sqlite3.Connection], tuple[int, dict]]
    ) -> tuple[int, str, bool]:
        """Run ``execute`` once per key; returns (status, JSON body text, replayed).

        The body is stored as the exact text sent, so a replay is byte-identical.
        """
        with self._write() as db:
            row = db.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone()
            if row is not None:
                if row["fingerprint"] != fingerprint:
                    return 409, json.dumps({"error": "idempotency_key_reused"}), False
                return row["status_code"], row["body"], True
            status, payload = execute(db)
            body = json.dumps(payload)
            db.execute(
                "INSERT INTO idempotency (key, fingerprint, status_code, body, created_at) VALUES (?, ?, ?, ?, ?)",
                (key, fingerprint, status, body, _now()),
            )
            return status, body, False

    @staticmethod
    def create_charge(db: sqlite3.Connection, *, amount_cents: int, currency: str, reference: str) -> dict:
        declined = DECLINE_FROM <= amount_cents <= DECLINE_TO
        charge_id = "ch_" + secrets.token_hex(12)
        db.execute(
            "INSERT INTO charges (id, amount_cents, currency, reference, status, decline_code, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (charge_id, amount_cents, currency, reference, "declined" if declined else "succeeded",
             "card_declined" if declined else None, _now()),
        )
        return _charge_json(db.execute("SELECT * FROM charges WHERE id = ?", (charge_id,)).fetchone())

    @staticmethod
    def create_refund(db: sqlite3.Connection, *, reference: str) -> dict:
        rows = db.execute(
            "SELECT id, amount_cents, currency FROM charges"
            " WHERE reference = ? AND status = 'succeeded' AND refund_id IS NULL",
            (reference,),
        ).fetchall()
        currencies = {row["currency"] for row in rows}
        if len(currencies) > 1:
            # One refund has one amount; summing euros and dollars would be a lie.
            raise InvalidRequest("reference", "charges with this reference use different currencies")
        refund_id = "re_" + secrets.token_hex(12)
        amount_cents = sum(row["amount_cents"] for row in rows)
        status = "refunded" if rows else "nothing_to_refund"
        currency = currencies.pop() if currencies else None
        db.execute(
            "INSERT INTO refunds (id, reference, status, amount_cents, currency, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (refund_id, reference, status, amount_cents, currency, _now()),
        )
        db.executemany("UPDATE charges SET refund_id = ? WHERE id = ?", [(refund_id, row["id"]) for row in rows])
        return {"id": refund_id, "status": status, "reference": reference,
                "amount": money(amount_cents), "currency": currency}

    def charges(self, reference: str) -> list[dict]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT * FROM charges WHERE reference = ? ORDER BY rowid", (reference,)).fetchall()
        return [{**_charge_json(row), "refunded": row["refund_id"] is not None} for row in rows]

    def counts(self) -> dict:
        with closing(self._connect()) as db:
            charges = dict(db.execute("SELECT status, COUNT(*) FROM charges GROUP BY status").fetchall())
            refunds = dict(db.execute("SELECT status, COUNT(*) FROM refunds GROUP BY status").fetchall())
        return {
            "charges": {"succeeded": charges.get("succeeded", 0), "declined": charges.get("declined", 0),
                        "total": sum(charges.values())},
            "refunds": {"refunded": refunds.get("refunded", 0),
                        "nothing_to_refund": refunds.get("nothing_to_refund", 0), "total": sum(refunds.values())},
        }
