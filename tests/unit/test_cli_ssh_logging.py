"""The CLI's SSH commands report a failed handshake once, as their own error: paramiko's
transport thread logs it with a traceback, which must not reach stderr (Python's
last-resort handler would print it, depending on which thread saw the closed tunnel
first: an e2e test comparing two refusals' stderr failed that way)."""

from __future__ import annotations

import subprocess
import sys

import pytest

LOG = ("import logging, {module}; "
       "logging.getLogger('paramiko.transport').error("
       "'Exception (client): Error reading SSH protocol banner')")


@pytest.mark.parametrize("module", ["controller.cli.ssh", "controller.cli.host_ssh"])
def test_paramiko_transport_errors_stay_off_stderr(module):
    quiet = subprocess.run([sys.executable, "-c", LOG.format(module=module)],
                           capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    # without the CLI module, the same record does reach stderr: the test can fail
    loud = subprocess.run([sys.executable, "-c", LOG.format(module="paramiko")],
                          capture_output=True, text=True, timeout=60)
    assert "Error reading SSH protocol banner" in loud.stderr
