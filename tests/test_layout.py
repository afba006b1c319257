"""Tests live beside what they test, and each test file has a name of its own: two test
modules with one basename make pytest's rootdir-relative imports clash (one shadows the
other unless every folder is a package), and a reader cannot tell them apart."""

import os
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Not the repo's code: the virtualenv, run data, and anything hidden (.git, .venv, caches).
SKIPPED = {"var", "node_modules", "__pycache__"}


def _test_files() -> dict[str, list[str]]:
    by_name = defaultdict(list)
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in SKIPPED]
        for name in files:
            if name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py")):
                by_name[name].append(str((Path(folder) / name).relative_to(REPO)))
    return by_name


def test_no_two_test_files_share_a_name():
    shared = {name: sorted(paths) for name, paths in _test_files().items() if len(paths) > 1}
    assert not shared, f"test files with the same name (give each its own): {shared}"


def test_the_walk_sees_the_suites():
    found = _test_files()
    assert "test_layout.py" in found and "test_choreography.py" in found
