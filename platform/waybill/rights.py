"""Who may look at the operations console and who may act from it, and the record of every
act (``waybill.console_admin``).

Two groups, made (and kept up to date) at every migrate of the identity store:

- ``operators`` may look: the console and every context's rows in the admin, read-only;
- ``operations leads`` may also act: redrive, discard, republish, skip and compensate (the
  console's operate right, and the change right the admin's actions ask of each table).

Superusers may do both. Each act is written to the admin's own history (``LogEntry``, in
the identity store): who, when, what it was done to and why, so the admin's "Recent
actions" and each row's History page show it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.apps import apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.management import create_permissions
from django.contrib.contenttypes.models import ContentType
from django.db.models import Model

log = logging.getLogger(__name__)

OPERATORS = "operators"
LEADS = "operations leads"
VIEW = "waybill.view_console"
OPERATE = "waybill.operate_console"


def may_view(user) -> bool:
    return bool(user.is_active and user.is_staff and (user.has_perm(VIEW) or user.has_perm(OPERATE)))


def may_operate(user) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm(OPERATE))


def ensure_groups(*, using: str = "default") -> None:
    """The two groups with their rights over every context's tables and the console's."""
    from django.contrib.auth.models import Group, Permission

    for config in apps.get_app_configs():  # the rights of apps migrated after this one, too
        create_permissions(config, verbosity=0, using=using)
    labels = {"waybill", *_context_labels()}
    rights = Permission.objects.using(using).filter(content_type__app_label__in=labels)
    looking = rights.filter(codename__startswith="view_")
    acting = rights.filter(codename__startswith="change_") | rights.filter(codename="operate_console")
    # Added, never set: what an administrator gave a group besides is kept across migrates.
    operators, _ = Group.objects.using(using).get_or_create(name=OPERATORS)
    operators.permissions.add(*looking)
    leads, _ = Group.objects.using(using).get_or_create(name=LEADS)
    leads.permissions.add(*(looking | acting))


def _context_labels() -> list[str]:
    from django.conf import settings

    return list(settings.WAYBILL_MANIFESTS)


def audit_record(user, rows: Iterable[Model], *, action: str, reason: str = "", detail: str = "") -> int:
    """Write one admin history entry per row: ``action`` (e.g. "redrive"), by ``user``, now,
    with ``reason`` and ``detail``. The rows may live in any context's database; the
    history lives in the identity store and names them by content type and id."""
    rows = list(rows)
    message = "; ".join(part for part in (
        action, f"why: {reason}" if reason else "", detail) if part)
    if rows:
        # Plain text, which the admin's history pages show as it is.
        LogEntry.objects.log_actions(user_id=user.pk, queryset=rows, action_flag=CHANGE,
                                     change_message=message[:4000])
        log.info("%s: %s of %d %s row(s)%s", user, action, len(rows),
                 ContentType.objects.get_for_model(type(rows[0])).model, f" ({reason})" if reason else "")
    return len(rows)
