"""Shared test fixtures.

Kernel tests (`@pytest.mark.kernel`) build network namespaces and need root and iproute2;
elsewhere they are skipped with the reason - unless `AMBIENTCTL_REQUIRE_KERNEL=1` (set by
`run-tests` as root, i.e. in CI), where a skipped kernel test is reported as a failure. The `lab`
fixture is ONE seed lab for the whole session (building takes about a second, but probes and faults are cheaper still):
tests that break it must use `lab.injected(name)` (reverted on exit) and leave it healthy.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Give the test process Python's own SIGINT handling, whatever started it.

    A suite started in the background by a non-interactive shell (`cmd &`, `nohup`, some CI
    runners) inherits SIGINT ignored - POSIX shells ignore SIGINT in asynchronous commands
    (bash(1), "COMMAND EXECUTION ENVIRONMENT") - and Python then leaves it ignored, so
    `_thread.interrupt_main()` does nothing and every CLI the tests start ignores the Ctrl-C
    they send (execve(2) keeps an ignored signal ignored). The interrupt tests pin ambientctl's
    handling of Ctrl-C, so they need it delivered: a caught signal is reset to the default at
    exec, so the children get SIGINT's default too.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def kernel_unavailable() -> str | None:
    """Why kernel tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "iptables", "ipset"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _kernel_required() -> bool:
    return os.environ.get("AMBIENTCTL_REQUIRE_KERNEL") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every kernel-marked test, with the reason, where the kernel is out of reach."""
    reason = kernel_unavailable()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


def _skip_declared(item: pytest.Item) -> bool:
    """A skip the test asks for itself (`skip`/`skipif(True)` marker, e.g. an opt-in
    fixture regeneration), as opposed to one caused by a kernel out of reach."""
    mine = kernel_unavailable()
    for mark in item.iter_markers("skip"):
        if mark.kwargs.get("reason", mark.args[0] if mark.args else None) != mine:
            return True
    for mark in item.iter_markers("skipif"):
        condition = mark.args[0] if mark.args else mark.kwargs.get("condition")
        if condition is True:
            return True
    return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With AMBIENTCTL_REQUIRE_KERNEL=1, a skipped kernel test is a failure, not a pass."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and _kernel_required() and "kernel" in item.keywords \
            and not _skip_declared(item):
        report.outcome = "failed"
        report.longrepr = f"kernel test skipped although AMBIENTCTL_REQUIRE_KERNEL=1: {report.longrepr}"


@pytest.fixture(scope="session")
def lab() -> Iterator[object]:
    """The healthy seed lab (`ambientlab.seed.SeedLab`), shared by the session."""
    reason = kernel_unavailable()
    if reason is not None:
        pytest.skip(reason)
    from ambientlab.cleanup import cleanup
    from ambientlab.seed import SeedLab

    cleanup()  # leftovers of crashed runs only: labs whose owner process is gone
    with SeedLab() as seed_lab:
        yield seed_lab
