#!/usr/bin/env python
"""Django's command-line utility for Waybill."""

import os
import sys
from pathlib import Path

# platform/ is a source root like src/, never a package: Python's own `platform` module
# must stay importable (Django and uuid rely on it).
sys.path.insert(1, str(Path(__file__).resolve().parent / "platform"))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
