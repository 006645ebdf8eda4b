"""How long the agent waits before calling the controller again after a failure.

Two kinds of failure, two caps:

* the controller is **unreachable** (``ControllerUnreachable``: the connection
  was refused or could not be made — the controller is stopped or restarting):
  the call cost the controller nothing, so the agent tries again soon, at most
  ``UNREACHABLE_CAP_S`` apart. After a restart its long-poll and heartbeat
  resume within that long of the controller listening, instead of sleeping out
  a back-off that grew while the controller was down (it reached 10 s).
* any **other failure** (a 5xx or 429 answer, a timeout, a cut connection) may
  be the controller struggling: the wait doubles up to ``CAP_S``.

Each wait is drawn between half and all of the current step ("equal jitter"),
so a region's agents that lost the controller together do not come back in
lock-step.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from agent.controller_client import ControllerUnreachable

FIRST_S = 0.5
CAP_S = 10.0
UNREACHABLE_CAP_S = 1.0


class Backoff:
    def __init__(self, first_s: float = FIRST_S, cap_s: float = CAP_S,
                 unreachable_cap_s: float = UNREACHABLE_CAP_S,
                 rand: Callable[[], float] = random.random) -> None:
        self.first_s, self.cap_s, self.unreachable_cap_s = first_s, cap_s, unreachable_cap_s
        self._rand = rand
        self.step_s = first_s
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        """The wait before the next try after ``exc``; the step grows for the next one."""
        cap = self.unreachable_cap_s if isinstance(exc, ControllerUnreachable) else self.cap_s
        step = min(self.step_s, cap)
        self.step_s = min(step * 2, self.cap_s)
        self.failures += 1
        return step * (0.5 + 0.5 * self._rand())

    def succeeded(self) -> bool:
        """Reset after a call went through; True when there had been failures."""
        had = self.failures > 0
        self.step_s, self.failures = self.first_s, 0
        return had


def jittered(interval_s: float, spread: float = 0.2,
             rand: Callable[[], float] = random.random) -> float:
    """``interval_s`` less up to ``spread`` of it, drawn afresh each time: agents that
    heard from the controller together (its restart, a change that woke every host) drift
    apart instead of heartbeating and long-polling in waves of the whole region."""
    return interval_s * (1 - spread * rand())
