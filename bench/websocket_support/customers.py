"""Create N customers and a signed-in Django session for each, straight in the default
database (bulk inserts, no password hashing, no login round trips).

Run as a script in an environment whose settings reach the ``default`` database (the
shell-web's): ``python bench/websocket_support/customers.py N PREFIX``. Prints one JSON
list on stdout: ``[{"id": user_id, "username": ..., "session_key": ...}, ...]``; the
browser's cookie is ``<SESSION_COOKIE_NAME>=<session_key>``.

A session is exactly what ``django.contrib.auth.login`` stores (user id, backend, session
auth hash), so Channels' AuthMiddleware accepts it like one from /accounts/login/.
"""

from __future__ import annotations

import json
import secrets
import sys
from datetime import timedelta


def main(count: int, prefix: str) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.backends.base import VALID_KEY_CHARS
    from django.contrib.sessions.models import Session
    from django.contrib.auth.hashers import make_password
    from django.db import transaction
    from django.utils import timezone

    User = get_user_model()
    usernames = [f"{prefix}-{i:05d}" for i in range(count)]
    unusable = make_password(None)  # nobody can log in with a password; sessions only
    with transaction.atomic(using="default"):
        User.objects.filter(username__in=usernames).delete()
        User.objects.bulk_create(
            [User(username=name, email=f"{name}@example.test", password=unusable) for name in usernames],
            batch_size=500,
        )
        users = list(User.objects.filter(username__in=usernames).order_by("username"))
        store = SessionStore()
        expires = timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE)
        backend = settings.AUTHENTICATION_BACKENDS[0]
        sessions, result = [], []
        for user in users:
            key = "".join(secrets.choice(VALID_KEY_CHARS) for _ in range(32))
            data = {SESSION_KEY: str(user.pk), BACKEND_SESSION_KEY: backend,
                    HASH_SESSION_KEY: user.get_session_auth_hash()}
            sessions.append(Session(session_key=key, session_data=store.encode(data), expire_date=expires))
            result.append({"id": user.pk, "username": user.username, "session_key": key})
        Session.objects.bulk_create(sessions, batch_size=500)
    json.dump({"cookie_name": settings.SESSION_COOKIE_NAME, "customers": result}, sys.stdout)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "wsbench")
