"""Domain errors: each carries its contract code and a message, and knows nothing of HTTP.

``engine/api/support.py`` alone maps them to HTTP statuses, in one table (``HTTP_STATUS``); the CLI
maps them to its exit codes (``engine/cli_audit.py``). Errors that exist only over HTTP (a missing
API key, a rate limit, a body too large) live in ``engine/api`` too.
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Root of every error the engine raises on purpose. ``code`` is the contract's error code."""

    code = "bad_request"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class BadRequest(EngineError):
    code = "bad_request"


class PlanLimitReached(EngineError):
    """The workspace's monthly limit is used up."""

    code = "plan_limit_reached"


class NotFound(EngineError, LookupError):
    """An unknown id, or one of another workspace: the two are indistinguishable on purpose."""

    code = "not_found"

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident} not found", {"id": ident})
        self.code = f"{kind}_not_found" if kind in ("campaign", "contact", "sender", "list", "webhook") else "not_found"


class InvalidState(EngineError):
    """A lifecycle action not allowed from the current status."""

    code = "invalid_state"

    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"cannot {action} a campaign that is {status}", {"status": status, "action": action})


class Conflict(EngineError):
    """A command that contradicts what exists (a duplicate, a resource in use); the code says which."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.code = code


class ValidationFailed(EngineError):
    """``errors``: [{field, message}]."""

    code = "validation_failed"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("validation failed", {"errors": errors})
        self.errors = errors


class CampaignInvalid(EngineError):
    code = "campaign_invalid"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("the campaign cannot be launched", {"problems": problems})
        self.problems = problems


class NoPendingEnrollments(EngineError):
    code = "no_pending_enrollments"


class SecretKeyMismatch(EngineError):
    """The database was created under another secret key.

    Raised by ``CampaignEngine.open`` before anything is appended: going on would chain new events
    under the wrong HMAC key (``audit verify`` would then report tampering) and fail to decrypt
    every personal field. The CLI exits 2 (an unusable configuration; nothing changed).
    """

    code = "secret_key_mismatch"

    def __init__(self, database_url: str, source: str) -> None:
        super().__init__(
            f"the secret key ({source}) is not the one the database {_redacted(database_url)} was created with: "
            "set CAMPAIGN_ENGINE_SECRET_KEY to that database's key; nothing was written",
            {"key_source": source})


def _redacted(url: str) -> str:
    """The database URL without a password, fit for an error message."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url
