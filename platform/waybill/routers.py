"""Database per bounded context: an app whose label names a hosted context lives in that
context's database (its manifest's alias); everything else (auth, sessions, admin) lives
in ``default``."""

from django.conf import settings


def _database_for(app_label: str) -> str:
    if app_label in settings.WAYBILL_CONTEXTS:
        return settings.WAYBILL_MANIFESTS[app_label].database
    return "default"


class ContextRouter:
    def db_for_read(self, model, **hints):
        return _database_for(model._meta.app_label)

    def db_for_write(self, model, **hints):
        return _database_for(model._meta.app_label)

    def allow_relation(self, obj1, obj2, **hints):
        # No foreign key crosses a context: each holds ids and copies of what it was told.
        return _database_for(obj1._meta.app_label) == _database_for(obj2._meta.app_label)

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == _database_for(app_label)
