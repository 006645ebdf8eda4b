"""The one exception commands raise to stop with a one-line message and an exit code."""

from __future__ import annotations


class CliError(Exception):
    """Printed as ``Error: <message>`` on stderr; the process exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
