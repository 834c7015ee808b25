"""Casemate's one error tree.

Boundaries translate third-party errors into these (``raise UpstreamError(...) from e``); the CLI
and the HTTP layer turn them into one clear line or an RFC 9457 problem response. Messages must
never contain secrets: they are shown to users and written to logs.
"""

from __future__ import annotations


class CasemateError(Exception):
    """Root of every error Casemate raises on purpose.

    ``status`` is the HTTP status the API answers with; ``title`` a short, stable summary.
    """

    status: int = 500
    title: str = "Internal error"
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(CasemateError):
    """Settings are missing, malformed or unsafe."""

    status = 500
    title = "Configuration error"


class InvalidInput(CasemateError):
    """A user-supplied value is malformed (bad argument, bad body, bad file)."""

    status = 422
    title = "Invalid input"
    exit_code = 2


class NotFound(CasemateError):
    status = 404
    title = "Not found"


class Conflict(CasemateError):
    status = 409
    title = "Conflict"


class AuthenticationFailed(CasemateError):
    """Credentials are missing, wrong, expired or forged. Never says which."""

    status = 401
    title = "Authentication failed"


class Denied(CasemateError):
    """The caller is known but not allowed to do this."""

    status = 403
    title = "Forbidden"


class PolicyError(CasemateError):
    """A policy is malformed or cannot be evaluated; callers must fail closed."""

    status = 422
    title = "Policy error"


class UpstreamError(CasemateError):
    """A component Casemate depends on (database, cluster, dockerd, broker) failed."""

    status = 502
    title = "Upstream error"


class IntegrityError(CasemateError):
    """Stored data failed an integrity check (audit chain, ciphertext authentication)."""

    status = 500
    title = "Integrity check failed"
