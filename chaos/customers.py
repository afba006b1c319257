"""Create the run's customer accounts, as the demo's are made (``load_demo``: a user with
the demo password, no staff rights), so each signs in through the API and the login form
like alice does. Run in an environment whose settings reach the identity database (the
shell's): ``python -m chaos.customers PREFIX N``; prints the usernames as JSON.

One password hash for all of them: hashing is deliberately slow, and these accounts share
the demo password anyway (dev settings only, like the demo accounts)."""

from __future__ import annotations

import json
import sys


def main(prefix: str, count: int) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    if not settings.WAYBILL_DEMO_ACCOUNTS:
        raise SystemExit("chaos customers exist only where demo accounts do (dev settings)")
    User = get_user_model()
    usernames = [f"{prefix}-{i:03d}" for i in range(count)]
    password = make_password(settings.WAYBILL_DEMO_PASSWORD)
    for name in usernames:
        User.objects.update_or_create(username=name, defaults={"email": f"{name}@example.test", "password": password,
                                                               "is_staff": False, "is_superuser": False})
    json.dump(usernames, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
