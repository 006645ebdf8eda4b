"""Instance status, derived from desired power (the API's) and observed power (the agent's).

See docs/agent-api.md. A pure function so the table is unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Derived:
    status: str
    reason: str = ""


def derive_status(*, desired_power: str, deleting: bool, observed_power: str | None,
                  error: str | None = None, retryable: bool = True) -> Derived:
    """Map (desired, observed) to an ECS status.

    * never reported by the host: Pending (Deleting if a delete was asked);
    * a non-retryable error: Error with the agent's message;
    * delete asked and still reported: Deleting;
    * desired running: Running when observed running, else Starting;
    * desired stopped: Stopping while observed running/shutting_down, else Stopped
      (``missing`` counts as stopped: the domain is not running);
    * a retryable error keeps the transitional status and carries the message as reason.
    """
    if error and not retryable:
        return Derived("Error", error)
    reason = error or ""
    if deleting:
        return Derived("Deleting", reason)
    if observed_power is None:
        return Derived("Pending", reason)
    if desired_power == "running":
        return Derived("Running" if observed_power == "running" else "Starting", reason)
    if observed_power in ("running", "shutting_down"):
        return Derived("Stopping", reason)
    if observed_power == "error":
        return Derived("Stopping", reason)
    return Derived("Stopped", reason)


# Status an instance settles in when reality is as its desired power asks.
CONVERGED_STATUS = {"running": "Running", "stopped": "Stopped"}


def is_converged(*, desired_power: str, deleting: bool, status: str) -> bool:
    """Whether an instance's observed status is what its desired state asks for."""
    if deleting:
        return status == "Deleted"
    return status == CONVERGED_STATUS.get(desired_power)
