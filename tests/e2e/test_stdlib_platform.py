"""Python's own ``platform`` module stays importable although the repository has a
``platform/`` folder on the path (a source root like src/, never a package): Django and
``uuid`` import the standard-library module, and a shadow would break them."""

from __future__ import annotations

import importlib.machinery
import platform as stdlib_platform
import re
import sys
import sysconfig
from pathlib import Path

import pytest

from .harness import REPO_DIR, manage

pytestmark = pytest.mark.e2e

STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()
REPO_PLATFORM_DIR = (REPO_DIR / "platform").resolve()


def _assert_stdlib_module(path: str | None) -> None:
    assert path, "the platform module has no file: a namespace package shadows the standard library"
    resolved = Path(path).resolve()
    assert resolved.is_relative_to(STDLIB), f"platform is {resolved}, not from the standard library {STDLIB}"
    assert not resolved.is_relative_to(REPO_PLATFORM_DIR), f"platform is the repository's own {resolved}"
    assert resolved.name == "platform.py"


def test_manage_py_shell_imports_the_standard_library_platform(tmp_path):
    done = manage(tmp_path, "shell", "-c", "import platform; print(platform.system(), platform.__file__)")

    lines = [line for line in done.stdout.splitlines() if re.fullmatch(r"\S+ /.*platform.*", line)]
    assert len(lines) == 1, f"no 'system path' line in the output:\n{done.stdout}\n{done.stderr}"
    system, path = lines[0].split(" ", 1)
    assert system == stdlib_platform.system()
    assert system in {"Linux", "Darwin", "Windows", "FreeBSD"}
    _assert_stdlib_module(path)


def test_pytest_with_platform_folder_on_the_path_still_imports_the_standard_library():
    assert str(REPO_PLATFORM_DIR) in {str(Path(p).resolve()) for p in sys.path if p}, "pythonpath setting changed?"
    import platform

    assert platform.system() == stdlib_platform.system() and platform.system()
    _assert_stdlib_module(platform.__file__)
    # And a fresh import (ignoring the module cache) would find the same file.
    spec = importlib.machinery.PathFinder.find_spec("platform", sys.path)
    assert spec is not None and spec.origin != "namespace", spec
    _assert_stdlib_module(spec.origin)
    # What broke when it was shadowed: Django and uuid import it.
    import uuid

    import django

    assert uuid.uuid4() and django.get_version()
