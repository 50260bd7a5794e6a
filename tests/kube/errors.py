"""API errors of the emulator, rendered as Kubernetes ``Status`` objects.

ApiError                  any refusal: HTTP code + Status reason + message (+ details)
├── NotFound              404 NotFound      — no such object, resource or path
├── AlreadyExists         409 AlreadyExists — create of an existing name
├── Conflict              409 Conflict      — stale resourceVersion
├── BadRequest            400 BadRequest    — malformed body, namespace mismatch
├── Invalid               422 Invalid       — schema / CEL / field validation (with causes)
├── MethodNotAllowed      405 MethodNotAllowed
└── UnsupportedMediaType  415 UnsupportedMediaType — unknown patch type
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A refusal the emulator answers with a Status object."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        """The ``v1 Status`` body, as the real API server answers it."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


class NotFound(ApiError):
    code, reason = 404, "NotFound"


class AlreadyExists(ApiError):
    code, reason = 409, "AlreadyExists"


class Conflict(ApiError):
    code, reason = 409, "Conflict"


class BadRequest(ApiError):
    code, reason = 400, "BadRequest"


class Invalid(ApiError):
    code, reason = 422, "Invalid"


class MethodNotAllowed(ApiError):
    code, reason = 405, "MethodNotAllowed"


class UnsupportedMediaType(ApiError):
    code, reason = 415, "UnsupportedMediaType"
