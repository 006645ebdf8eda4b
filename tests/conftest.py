"""Shared pytest wiring: test outcomes visible to fixtures (for cleanup on failure)."""

from __future__ import annotations

import os

import pytest

# The CLI's tables and messages are as wide as COLUMNS says when not on a terminal;
# pytest-xdist workers see 80, a serial run none. One width for every run, so the CLI
# tests read whole rows and messages whichever way the suite is run.
os.environ["COLUMNS"] = "240"
# Every controller the suite starts (in process or as a subprocess, which inherits this)
# compiles a host's spec again on each spec-cache hit and fails the long-poll when the
# two differ: a change that forgot to bump the generation shows in the test that made it.
os.environ.setdefault("MINIECS_SPEC_CACHE_CHECK", "1")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# the database fixture the `live` CLI fixture (tests/unit/test_cli_commands.py) needs, for
# every module that imports `live`
from tests.controller_factories import default_db_url  # noqa: E402,F401
