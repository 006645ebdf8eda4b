"""Status derivation table (docs/agent-api.md)."""

import pytest

from controller.services.status import derive_status


@pytest.mark.parametrize("desired,deleting,observed,error,retryable,expected", [
    ("running", False, None, None, True, "Pending"),
    ("running", False, "running", None, True, "Running"),
    ("running", False, "stopped", None, True, "Starting"),
    ("running", False, "missing", None, True, "Starting"),
    ("running", False, "shutting_down", None, True, "Starting"),
    ("stopped", False, "running", None, True, "Stopping"),
    ("stopped", False, "shutting_down", None, True, "Stopping"),
    ("stopped", False, "stopped", None, True, "Stopped"),
    ("stopped", False, "missing", None, True, "Stopped"),
    ("running", True, "running", None, True, "Deleting"),
    ("running", False, "error", "disk full", False, "Error"),
    ("running", False, "error", "libvirt hiccup", True, "Starting"),
    ("stopped", True, None, None, True, "Deleting"),
])
def test_derive(desired, deleting, observed, error, retryable, expected):
    derived = derive_status(desired_power=desired, deleting=deleting, observed_power=observed,
                            error=error, retryable=retryable)
    assert derived.status == expected
    if error:
        assert derived.reason == error
