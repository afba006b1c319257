"""Production settings: every secret and address from the environment, failing fast and
naming what is missing, and `manage.py check --deploy` clean."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

from waybill import manifest

REPO = Path(__file__).resolve().parents[1]


def _manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WAYBILL_", "DJANGO_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings.production", **env},
    )


def _production_env(tmp_path) -> dict:
    env = {
        "WAYBILL_SECRET_KEY": secrets.token_urlsafe(50),
        "WAYBILL_ALLOWED_HOSTS": "shop.example.com",
        "WAYBILL_BROKER_URL": "amqp://waybill:secret@127.0.0.1:5672/waybill",
        "WAYBILL_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    for alias in ("DEFAULT", *(context.database.upper() for context in manifest.discover().values())):
        env[f"WAYBILL_{alias}_DATABASE_URL"] = f"sqlite:///{tmp_path / alias.lower()}.sqlite3"
    return env


def test_check_deploy_is_clean(tmp_path):
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=_production_env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no issues" in result.stdout


def test_missing_secret_fails_fast_naming_the_variable(tmp_path):
    env = _production_env(tmp_path)
    del env["WAYBILL_SECRET_KEY"]
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert "WAYBILL_SECRET_KEY" in result.stderr


def test_missing_database_url_fails_fast_naming_the_variable(tmp_path):
    env = _production_env(tmp_path)
    del env["WAYBILL_ORDERS_DATABASE_URL"]
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert "WAYBILL_ORDERS_DATABASE_URL" in result.stderr


def test_production_has_no_demo_accounts(tmp_path):
    result = _manage("load_demo", env=_production_env(tmp_path))
    assert result.returncode != 0
    assert "only in the embedded/dev settings" in result.stderr
