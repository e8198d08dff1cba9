"""pytest plugin: the session-scoped ``lab`` fixture (3 real test hosts, see tests/hostlab.py).

Registered from tests/conftest.py through ``pytest_plugins``. Tests using ``lab``
are marked ``netns`` automatically; they are skipped (with the reason) only when
the machine cannot build a lab at all: not root, or ``ip`` / ``sshd`` missing.
Any other failure to build the lab is an error, not a skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hostlab import HostLab, create_lab, unavailable_reason

LAB_HOSTS = 3


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostLab]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    built = create_lab(LAB_HOSTS, tmp_path_factory.mktemp("hostlab"))
    try:
        yield built
    finally:
        built.destroy()


@pytest.fixture
def lab_links_up(lab: HostLab) -> Iterator[HostLab]:
    """The session lab, with every link brought back up after the test (for tests that pull cables)."""
    yield lab
    for host in lab.hosts:
        if not lab.link_is_up(host):
            lab.link_up(host)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.netns)
