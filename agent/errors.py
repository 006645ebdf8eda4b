"""The agent's errors: each one says whether retrying can help.

``TemporaryError`` (retry on a later pass, e.g. libvirtd restarting, the
controller unreachable, a download cut short) and ``PermanentError`` (the
spec asks for something this host cannot do; retrying the same spec will not
help). Reconcilers raise these; the reconcile pass turns them into the
``error``/``retryable``/``retries`` fields of the report.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base class; ``retryable`` tells the reconcile pass and the controller what to expect."""

    retryable: bool = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class TemporaryError(AgentError):
    """Retrying later may succeed."""

    retryable = True


class PermanentError(AgentError):
    """Retrying the same spec will fail the same way."""

    retryable = False


class Cancelled(AgentError):
    """The work was cancelled (its spec entry went away or says ``cancel``) while it ran."""

    retryable = False


class CommandError(TemporaryError):
    """A command exited non-zero or timed out (see ``agent.proc``)."""

    def __init__(self, argv: list[str], returncode: int | None, stderr: str,
                 *, timed_out: bool = False) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.timed_out = timed_out
        what = "timed out" if timed_out else f"exited {returncode}"
        detail = stderr.strip().splitlines()[-3:] if stderr.strip() else []
        super().__init__(f"{argv[0]} {what}" + (": " + " | ".join(detail) if detail else ""))
