"""Read-model rows -> the contract's JSON shapes. Secrets never leave through here."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from engine.domain.definition import definition_from_json


def _load(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str) else raw


def sender_view(r: Any, sent_today: int = 0, bounce_rate: float = 0.0, *,
                daily_limit_today: int | None = None) -> dict[str, Any]:
    smtp = _load(r["smtp"]) or {}
    imap = _load(r["imap"])
    return {
        "id": r["id"], "email": r["email"], "from_name": r["from_name"],
        "smtp": {"host": smtp.get("host"), "port": smtp.get("port"), "username": smtp.get("username"),
                 "security": smtp.get("security"), "has_password": bool(smtp.get("password_enc"))},
        "imap": None if imap is None else {
            "host": imap.get("host"), "port": imap.get("port"), "username": imap.get("username"),
            "security": imap.get("security"), "folder": imap.get("folder", "INBOX"),
            "has_password": bool(imap.get("password_enc"))},
        "daily_limit": r["daily_limit"], "daily_limit_variation_pct": r["daily_limit_variation_pct"],
        "bounce_rate_threshold": r["bounce_rate_threshold"], "status": r["status"],
        "disabled_reason": r["disabled_reason"], "disabled_at": r["disabled_at"], "sent_today": sent_today,
        "bounce_rate": bounce_rate, "has_password": bool(smtp.get("password_enc")), "created_at": r["created_at"],
        "max_connections": r["max_connections"], "warmup": _load(r["warmup"]),
        "daily_limit_today": r["daily_limit"] if daily_limit_today is None else daily_limit_today,
        "dkim": _dkim_view(r["dkim"]),
    }


def _dkim_view(raw: Any) -> dict[str, Any] | None:
    """The public half of the sender's DKIM key; the encrypted private key stays in the read model."""
    dkim = _load(raw)
    if not dkim:
        return None
    return {"selector": dkim["selector"], "algorithm": dkim["algorithm"], "public_key": dkim["public_key"]}


def contact_view(r: Any) -> dict[str, Any]:
    return {
        "id": r["id"], "email": r["email"], "first_name": r["first_name"], "last_name": r["last_name"],
        "company": r["company"], "timezone": r["timezone"], "custom_fields": _load(r["custom_fields"]) or {},
        "status": r["status"], "unsubscribed": bool(r["unsubscribed"]), "bounced": bool(r["bounced"]),
        "replied": bool(r["replied"]), "created_at": r["created_at"], "updated_at": r["updated_at"],
    }


def list_view(r: Any, count: int | None = None) -> dict[str, Any]:
    out = {"id": r["id"], "name": r["name"], "created_at": r["created_at"]}
    if count is not None:
        out["contact_count"] = count
    return out


def suppression_view(r: Any) -> dict[str, Any]:
    return {"kind": r["kind"], "value": r["value"], "value_hash": r["value_hash"], "reason": r["reason"],
            "created_at": r["created_at"]}


@lru_cache(maxsize=1024)
def _definition_text(stored: str) -> str:
    """A campaigns row's definition as the view shows it: parsed (an older shape upcast to the
    current one) and written back as the read model writes it (compact, keys sorted), so that a
    current definition is shown byte for byte as stored."""
    return json.dumps(definition_from_json(stored).to_dict(), separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False)


def campaign_view(r: Any, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """The campaign: its definition in the shape it is stored in (an older shape upcast), plus
    its status and lifecycle times."""
    raw = r["definition"]
    d = json.loads(_definition_text(raw if isinstance(raw, str) else json.dumps(raw)))
    out = {
        "id": r["id"], "name": d["name"], "description": d["description"], "emoji": d["emoji"],
        "folder": d["folder"], "tags": d["tags"], "goal": d["goal"],
        "outreach_id": d["outreach_id"], "sender_ids": d["sender_ids"], "schedule": d["schedule"],
        "settings": d["settings"], "steps": d["steps"], "workflow": d["workflow"],
        "status": r["status"], "created_at": r["created_at"], "updated_at": r["updated_at"],
        "launched_at": r["launched_at"], "completed_at": r["completed_at"], "approved_at": r["approved_at"],
        "paused_reason": r["paused_reason"] if r["status"] == "paused" else None,
    }
    if stats is not None:
        out["stats"] = stats
    return out


def enrollment_view(r: Any) -> dict[str, Any]:
    return {"id": r["id"], "contact_id": r["contact_id"], "email": r["email"], "status": r["status"],
            "current_step": r["current_step"], "next_send_at": r["next_send_at"], "batch_number": r["batch_number"],
            "priority": r["priority"], "sender_id": r["sender_id"], "stop_reason": r["stop_reason"],
            "enrolled_at": r["enrolled_at"]}


def webhook_view(r: Any) -> dict[str, Any]:
    return {"id": r["id"], "url": r["url"], "events": _load(r["event_types"]), "created_at": r["created_at"]}
