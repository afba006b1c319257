"""Fixtures that run the platform for real.

- ``e2e_platform``: one platform shared by the whole session (the main suite), once
  embedded (``runplatform``) and once in services mode; tests keep out of each other's
  way by creating their own products (unique SKUs).
- ``platform_factory``: private platforms for tests that kill or restart them.
- ``shop``: the API helpers (see ``harness.Shop``) on the shared platform.

Each platform runs on a copy of one prepared data folder (``migrateall`` + ``load_demo``
run once per session), on a free port of 127.0.0.1, with its output in a log file beside
its databases. A failing test shows the tail of that log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import (
    DEMO_SKUS,
    READY_TIMEOUT,
    Platform,
    Shop,
    copy_data_dir,
    prepare_data_dir,
    wait_for,
)


@pytest.fixture(scope="session")
def demo_data_template(tmp_path_factory) -> Path:
    """A migrated data folder with the demo shop; never run on, only copied."""
    return prepare_data_dir(tmp_path_factory.mktemp("waybill-template") / "data")


class PlatformFactory:
    def __init__(self, template: Path, base_dir: Path):
        self.template = template
        self.base_dir = base_dir
        self.platforms: list[Platform] = []

    def __call__(self, name: str = "platform", *, start: bool = True) -> Platform:
        """A platform on a fresh copy of the demo data, started unless ``start`` is False."""
        platform = Platform(copy_data_dir(self.template, self.base_dir / name), name=name)
        self.platforms.append(platform)
        if start:
            platform.start()
        return platform

    def stop_all(self) -> list[str]:
        """SIGINT whatever still runs; returns a complaint per platform that did not exit 0."""
        problems = []
        for platform in self.platforms:
            if not platform.running:
                platform.close_clients()
                continue
            try:
                code = platform.stop()
            except AssertionError as exc:
                problems.append(str(exc))
                continue
            if code != 0:
                problems.append(f"{platform.name} exited {code} on SIGINT\n{platform.log_tail()}")
        return problems


def _start_shared(template: Path, data_dir: Path) -> Platform:
    platform = Platform(copy_data_dir(template, data_dir), name="shared-platform")
    platform.start()
    shop = Shop(platform)
    try:
        wait_for(lambda: DEMO_SKUS <= shop.catalog().keys(), READY_TIMEOUT,
                 f"the catalog to list the demo products {sorted(DEMO_SKUS)}")
    except AssertionError as exc:
        platform.stop()
        raise AssertionError(f"{exc}\n{platform.log_tail()}") from None
    return platform


@pytest.fixture(scope="session", params=[
    pytest.param("embedded", marks=pytest.mark.xdist_group("embedded")),
    pytest.param("services", marks=pytest.mark.xdist_group("services")),
])
def e2e_platform(request, tmp_path_factory) -> Iterator[Platform]:
    """The shared platform, in each mode: ``base_url``, ``token(user)``, ``client(user)``.

    embedded: one ``runplatform``, stopped with SIGINT at the end of the session (anything
    but exit code 0 fails). services: every context as its own processes on PostgreSQL,
    RabbitMQ and Redis behind the gateway (``services_deployment`` in tests/conftest.py)."""
    if request.param == "services":
        deployment = request.getfixturevalue("services_deployment")
        wait_for(lambda: DEMO_SKUS <= Shop(deployment).catalog().keys(), READY_TIMEOUT,
                 f"the catalog to list the demo products {sorted(DEMO_SKUS)}")
        yield deployment
        deployment.close_clients()
        return
    template = request.getfixturevalue("demo_data_template")
    platform = _start_shared(template, tmp_path_factory.mktemp("waybill-shared") / "data")
    yield platform
    code = platform.stop()
    assert code == 0, f"the shared platform exited {code} on SIGINT\n{platform.log_tail()}"


@pytest.fixture(scope="session")
def shop(e2e_platform) -> Shop:
    return Shop(e2e_platform)


@pytest.fixture
def platform_factory(demo_data_template, tmp_path) -> Iterator[PlatformFactory]:
    """Private platforms for one test; any still running at its end must stop cleanly."""
    factory = PlatformFactory(demo_data_template, tmp_path)
    yield factory
    problems = factory.stop_all()
    assert not problems, "\n\n".join(problems)


@pytest.fixture(name="wait_for")
def wait_for_fixture():
    """``wait_for(predicate, timeout, what)``: poll until truthy or fail saying ``what``."""
    return wait_for


def _platforms_of(item: pytest.Item) -> list[Platform]:
    found: list[Platform] = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Platform):
            found.append(value)
        elif isinstance(value, Shop):
            found.append(value.platform)
        elif isinstance(value, PlatformFactory):
            found.extend(value.platforms)
    unique: list[Platform] = []
    for platform in found:
        if all(platform is not seen for seen in unique):
            unique.append(platform)
    return unique


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, put the tail of each involved platform's log into the report."""
    report = yield
    if report.failed:
        for platform in _platforms_of(item):
            report.sections.append((f"{platform.name} log ({platform.log_path})", platform.log_tail()))
    return report
