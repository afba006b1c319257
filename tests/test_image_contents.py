"""The production image (Dockerfile, ``COPY . .`` under .dockerignore) and
``requirements.txt`` carry what production runs, and nothing that only tests, benchmarks or
documentation use; those install their own extras (requirements-test.txt,
requirements-bench.txt). There is no Docker engine here, so the build context is computed
from .dockerignore with Docker's rules: a pattern matches a path or any folder above it,
``*`` within one folder, ``**`` across folders, ``!`` takes a match back, the last
matching line wins."""

from __future__ import annotations

import re
import subprocess

from e2e.harness import REPO_DIR


def _requirement_names(filename: str) -> set[str]:
    """The distributions a requirements file pins (its ``-r`` includes and comments left out)."""
    return {re.split(r"[=<>\[ ;]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
            for line in (REPO_DIR / filename).read_text().splitlines()
            if line.strip() and not line.lstrip().startswith(("#", "-"))}


def _pattern(line: str) -> re.Pattern:
    text = re.escape(line.strip("/")).replace(r"\*\*", "\0").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.compile(text.replace("\0", ".*") + "(/.*)?")


def build_context() -> set[str]:
    rules = []
    for line in (REPO_DIR / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _pattern(line.removeprefix("!"))))
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_DIR,
                           capture_output=True, text=True, check=True).stdout.split()
    kept = set()
    for path in files:
        excluded = False
        for negated, pattern in rules:
            if pattern.fullmatch(path):
                excluded = not negated
        if not excluded:
            kept.add(path)
    return kept


def test_the_image_has_no_tests_benchmarks_or_their_requirements():
    context = build_context()
    leaked = sorted(path for path in context if path.startswith(("tests/", "bench/", "chaos/", ".ci/"))
                    or re.match(r"apps/[^/]+/tests/", path) or path in (
                        "conftest.py", "requirements-test.txt", "requirements-bench.txt"))
    assert leaked == [], leaked[:20]


def test_the_image_has_what_production_runs():
    context = build_context()
    for needed in ("manage.py", "requirements.txt", "platform/config/settings/production.py",
                   "platform/waybill/consumer.py", "apps/orders/manifest.py", "apps/orders/migrations/0001_initial.py",
                   "docs/asyncapi.json"):
        assert needed in context, needed
    assert any(path.startswith("apps/readmodels/static/") for path in context)
    assert any(path.startswith("frontend/") for path in context)


def test_requirements_txt_names_no_test_or_benchmark_tool():
    production = _requirement_names("requirements.txt")
    extras = _requirement_names("requirements-test.txt") | _requirement_names("requirements-bench.txt")
    assert {"pytest", "schemathesis", "playwright", "matplotlib", "psutil"} <= extras  # the parse found them
    assert production.isdisjoint(extras), production & extras
    for filename in ("requirements-test.txt", "requirements-bench.txt"):
        assert "-r requirements.txt" in (REPO_DIR / filename).read_text().splitlines(), filename
