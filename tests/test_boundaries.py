"""The architecture's boundaries, checked by import-linter (pyproject.toml) on every run."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=REPO, env={"PYTHONPATH": str(REPO / "platform"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 broken" in result.stdout


# The one exception, once per deployment: webhooks' move out of the readmodels database
# reads the old tables through readmodels' historical models, then drops them.
ONE_OFF_MOVES = {"apps/webhooks/management/commands/webhooks_move_from_readmodels.py"}


def test_no_context_reaches_into_another_contexts_tables():
    """Import-linter sees imports; this catches the dynamic way round them."""
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "apps").rglob("*.py")
        if "get_model(" in path.read_text() and "migrations" not in path.parts
        and str(path.relative_to(REPO)) not in ONE_OFF_MOVES
    ]
    assert offenders == []
