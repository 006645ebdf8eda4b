"""The one way the agent runs a command: an argument list, never a shell, with a timeout.

Every subprocess of the agent goes through :func:`run`, so tests can forbid
or fake them in one place and every failure reads the same way.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass

from agent.errors import CommandError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(argv: list[str], *, timeout: float = DEFAULT_TIMEOUT_S, check: bool = True,
        input_text: str | None = None) -> Result:
    """Run ``argv`` and capture its output.

    Raises :class:`CommandError` (retryable) on a non-zero exit when ``check``
    is true, on a timeout, or when the program cannot be started.
    """
    if isinstance(argv, str) or not argv:
        raise TypeError("run() takes a non-empty argument list, never a shell string")
    argv = [str(a) for a in argv]
    log.debug("run %s", argv)
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                            input=input_text, stdin=None if input_text is not None
                            else subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandError(argv, None, err, timed_out=True) from None
    except OSError as exc:
        raise CommandError(argv, None, str(exc)) from None
    if check and cp.returncode != 0:
        raise CommandError(argv, cp.returncode, cp.stderr)
    return Result(argv, cp.returncode, cp.stdout, cp.stderr)
