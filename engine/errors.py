"""Domain errors. Only ``engine/api`` maps them to HTTP statuses; each carries its contract code."""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Root of every error the engine raises on purpose. ``code`` is the contract's error code."""

    code = "bad_request"
    status = 400

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class BadRequest(EngineError):
    code, status = "bad_request", 400


class Unauthorized(EngineError):
    code, status = "unauthorized", 401


class PlanLimitReached(EngineError):
    """The workspace's monthly limit is used up."""

    code, status = "plan_limit_reached", 402


class NotFound(EngineError, LookupError):
    """An unknown id, or one of another workspace: the two are indistinguishable on purpose."""

    code, status = "not_found", 404

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident} not found", {"id": ident})
        self.code = f"{kind}_not_found" if kind in ("campaign", "contact", "sender", "list", "webhook") else "not_found"


class InvalidState(EngineError):
    """A lifecycle action not allowed from the current status."""

    code, status = "invalid_state", 409

    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"cannot {action} a campaign that is {status}", {"status": status, "action": action})


class Conflict(EngineError):
    status = 409

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.code = code


class PayloadTooLarge(EngineError):
    code, status = "payload_too_large", 413


class ValidationFailed(EngineError):
    """``errors``: [{field, message}]."""

    code, status = "validation_failed", 422

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("validation failed", {"errors": errors})
        self.errors = errors


class CampaignInvalid(EngineError):
    code, status = "campaign_invalid", 422

    def __init__(self, problems: list[str]) -> None:
        super().__init__("the campaign cannot be launched", {"problems": problems})
        self.problems = problems


class NoPendingEnrollments(EngineError):
    code, status = "no_pending_enrollments", 422


class RateLimited(EngineError):
    code, status = "rate_limited", 429


class SecretKeyMismatch(EngineError):
    """The database was created under another secret key.

    Raised by ``CampaignEngine.open`` before anything is appended: going on would chain new events
    under the wrong HMAC key (``audit verify`` would then report tampering) and fail to decrypt
    every personal field. The CLI exits 2 (an unusable configuration; nothing changed).
    """

    code, status = "secret_key_mismatch", 500

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
