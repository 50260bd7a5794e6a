"""The operator's error tree, and its one mapping to kopf's retry errors.

::

    ControllerError
     ├── AgentError               talking to an agent went wrong
     │    ├── AgentUnreachable    connection refused/reset, timeout, 5xx
     │    │    └── CredentialUnavailable  no credential for this agent (TokenRequest failed)
     │    ├── AgentUnauthorized   401/403: the agent refused our token
     │    └── AgentProtocolError  an answer that is not the documented shape
     └── RequestSpecError         an object the CRD should have refused (never retried)

Lower-level exceptions (aiohttp, OSError, JSON) are translated where they happen and chained.
Agent errors are normally turned into a target's phase by the reconciler; whatever reaches a
kopf handler goes through `as_kopf_error`, the only place that picks kopf's retry behaviour.
"""

from __future__ import annotations

import kopf


class ControllerError(Exception):
    """Base of every error the operator raises on purpose."""


class AgentError(ControllerError):
    """A request to an agent failed."""

    def __init__(self, message: str, *, endpoint: str, status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class AgentUnreachable(AgentError):
    """No usable answer: connection error, timeout or a 5xx."""


class CredentialUnavailable(AgentUnreachable):
    """The operator could not get a credential for this agent (e.g. the TokenRequest failed):
    nothing was sent; retried with backoff like an unreachable agent."""


class AgentUnauthorized(AgentError):
    """The agent answered 401 or 403."""


class AgentProtocolError(AgentError):
    """The agent answered something that is not its documented API."""


class RequestSpecError(ControllerError):
    """The object's spec cannot be acted upon (the CRD's validation should prevent it)."""


def as_kopf_error(error: Exception, *, delay: float) -> kopf.TemporaryError | kopf.PermanentError:
    """kopf's view of an error: retry after `delay`, or never (for a bad spec)."""
    if isinstance(error, RequestSpecError):
        return kopf.PermanentError(str(error))
    return kopf.TemporaryError(f"{type(error).__name__}: {error}", delay=delay)
