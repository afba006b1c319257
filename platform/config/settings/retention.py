"""How long the kernel keeps messages it has handled (waybill/retention.py)."""

from .environment import env

# Sent outbox rows and processed inbox rows: the inbox is what makes a late duplicate
# harmless, so it keeps the longer.
WAYBILL_OUTBOX_RETENTION_SECONDS = env.int("WAYBILL_OUTBOX_RETENTION_SECONDS", default=3 * 24 * 3600)
WAYBILL_INBOX_RETENTION_SECONDS = env.int("WAYBILL_INBOX_RETENTION_SECONDS", default=7 * 24 * 3600)
