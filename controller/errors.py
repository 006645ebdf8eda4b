"""Domain exceptions. Services raise these; ``controller.api.errors`` maps them to HTTP once.

Two kinds, as in Ganeti: the caller asked for something impossible (every
class here), or execution failed (anything else: a 500 with a request id).
Codes follow ECS (``InvalidCidrBlock.Malformed``, ``OperationDenied.NoStock``).
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a caller can cause. ``status`` is the HTTP status it maps to."""

    status: int = 400
    default_code: str = "InvalidParameter"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field


class InvalidParameter(DomainError):
    """A request field is malformed or not allowed (400)."""

    status = 400

    def __init__(self, code: str, field: str | None, message: str) -> None:
        super().__init__(message, code=code, field=field)


class NotFound(DomainError):
    """A referenced resource does not exist (404); ``code`` like ``InvalidInstanceId.NotFound``."""

    status = 404
    default_code = "NotFound"

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, code=code, field=field)


class Conflict(DomainError):
    """The request clashes with the resource's current state (409)."""

    status = 409
    default_code = "Conflict"

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, code=code, field=field)


class InsufficientCapacity(Conflict):
    """No host can take the request (409 ``OperationDenied.NoStock``)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__("OperationDenied.NoStock", message, field)


class Forbidden(DomainError):
    """Authenticated but not allowed (403), e.g. deletion protection or another host's object."""

    status = 403
    default_code = "Forbidden"

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, code=code, field=field)


class Unauthorized(DomainError):
    """Missing or unknown bearer token (401)."""

    status = 401
    default_code = "InvalidToken"

    def __init__(self, message: str = "a valid bearer token is required") -> None:
        super().__init__(message)
