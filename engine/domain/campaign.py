"""The campaign aggregate: pure ``evolve`` and ``decide`` functions over its stream.

Time and ids come in as arguments; a command whose effect already happened yields no events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from engine.delivery.content.templates import validate_template
from engine.domain.definition import CampaignDefinition, StepDefinition, schedule_to_dict
from engine.errors import CampaignInvalid, Conflict, InvalidState, PlanLimitReached, ValidationFailed
from events.catalog import campaign as ev
from events.registry import Event, format_time

EDITABLE_ALWAYS = frozenset({"name", "description", "emoji", "folder", "tags"})
# While active: the next tick uses the new values; nothing already claimed changes.
EDITABLE_WHILE_ACTIVE = EDITABLE_ALWAYS | {"schedule", "settings", "sender_ids", "steps"}
EDITABLE_WHEN_STOPPED = frozenset({"draft", "scheduled", "paused"})
FINAL = frozenset({"completed", "cancelled", "archived"})


@dataclass(frozen=True, slots=True)
class CampaignState:
    id: str | None = None
    status: str = "new"
    definition: CampaignDefinition = field(default_factory=lambda: CampaignDefinition(name=""))
    approved: bool = False
    deleted: bool = False
    dispatched_batches: tuple[int, ...] = ()
    variant_winners: tuple[tuple[int, str], ...] = ()  # (step, variant id) as campaign.variant_won recorded


def evolve(state: CampaignState, e: Event) -> CampaignState:
    match e:
        case ev.CampaignCreated():
            return CampaignState(id=e.campaign_id, status="draft",
                                 definition=CampaignDefinition.from_dict(e.definition))
        case ev.CampaignUpdated():
            return replace(state, definition=state.definition.with_changes(e.changes))
        case ev.CampaignScheduleChanged():
            return replace(state, definition=state.definition.with_schedule(e.schedule))
        case ev.CampaignApproved():
            return replace(state, approved=True)
        case ev.CampaignLaunched():
            return replace(state, status=e.status)
        case ev.CampaignActivated() | ev.CampaignResumed():
            return replace(state, status="active")
        case ev.CampaignPaused():
            return replace(state, status="paused")
        case ev.CampaignCompleted():
            return replace(state, status="completed")
        case ev.CampaignCancelled():
            return replace(state, status="cancelled")
        case ev.CampaignArchived():
            return replace(state, status="archived")
        case ev.CampaignDeleted():
            return replace(state, deleted=True)
        case ev.CampaignBatchDispatched():
            return replace(state, dispatched_batches=(*state.dispatched_batches, e.batch_number))
        case ev.CampaignVariantWon():
            return replace(state, variant_winners=(*state.variant_winners, (e.step, e.variant)))
    return state


def template_problems(definition: CampaignDefinition | Mapping[str, Any]) -> list[dict[str, str]]:
    """Unknown merge tags or broken braces in any step, as validation errors (a stored JSON
    definition is parsed first)."""
    if not isinstance(definition, CampaignDefinition):
        definition = CampaignDefinition.from_dict(definition)
    errors: list[dict[str, str]] = []
    for i, step in enumerate(definition.steps):
        for name in ("subject", "body_html", "body_text"):
            text = getattr(step, name)
            if text:
                errors.extend({"field": f"steps.{i}.{name}", "message": p} for p in validate_template(text))
        for v, variant in enumerate(step.variants or ()):  # a variant is sent like the step itself
            for name in ("subject", "body_html", "body_text"):
                text = getattr(variant, name)
                if text:
                    errors.extend({"field": f"steps.{i}.variants.{v}.{name}", "message": p}
                                  for p in validate_template(text))
    return errors


def decide_create(campaign_id: str, definition: CampaignDefinition, copied_from: str | None = None) -> list[Event]:
    """The event stores the definition's JSON shape (:meth:`CampaignDefinition.to_dict`)."""
    problems = template_problems(definition)
    if problems:
        raise ValidationFailed(problems)
    return [ev.CampaignCreated(campaign_id=campaign_id, definition=definition.to_dict(), copied_from=copied_from)]


def decide_update(state: CampaignState, changes: dict[str, Any], *, sent_steps: int = 0) -> list[Event]:
    """Live edits: an active campaign's schedule, settings, senders and steps not yet sent may
    change (`sent_steps`: how many of its first steps have been claimed for some contact; those
    stay as they were sent, so a sequence never reads differently halfway through)."""
    if state.status in FINAL:
        raise InvalidState(state.status, "update")
    if state.status == "active" and set(changes) - EDITABLE_WHILE_ACTIVE:
        raise InvalidState(state.status, "update " + ", ".join(sorted(set(changes) - EDITABLE_WHILE_ACTIVE)))
    if state.status == "active" and "steps" in changes and sent_steps:
        # compared as parsed steps: a step stored before a field existed equals its re-sent form
        # with that field empty
        before = list(state.definition.steps[:sent_steps])
        if [StepDefinition.from_dict(step) for step in list(changes["steps"] or [])[:sent_steps]] != before:
            raise ValidationFailed([{"field": "steps", "message": f"steps 1 to {sent_steps} were already sent; "
                                                                  "only later steps can change while active"}])
    problems = template_problems(state.definition.with_changes(changes)) if "steps" in changes else []
    if problems:
        raise ValidationFailed(problems)
    stored = state.definition.to_dict()
    changed = {k: v for k, v in changes.items() if stored.get(k) != v}
    if not changed:
        return []
    schedule = changed.pop("schedule", None)
    out: list[Event] = []
    if changed:
        out.append(ev.CampaignUpdated(campaign_id=_id(state), changes=changed))
    if schedule is not None:
        out.append(ev.CampaignScheduleChanged(campaign_id=_id(state), schedule=schedule))
    return out


def decide_schedule(state: CampaignState, schedule: dict[str, Any]) -> list[Event]:
    if state.status in FINAL:
        raise InvalidState(state.status, "change the schedule of")
    if schedule_to_dict(state.definition.schedule) == schedule:
        return []
    return [ev.CampaignScheduleChanged(campaign_id=_id(state), schedule=schedule)]


def decide_approve(state: CampaignState) -> list[Event]:
    if state.status in FINAL:
        raise InvalidState(state.status, "approve")
    return [] if state.approved else [ev.CampaignApproved(campaign_id=_id(state))]


@dataclass(frozen=True, slots=True)
class LaunchFacts:
    """What launch needs to know beyond the campaign's own stream."""

    active_sender_ids: frozenset[str]
    known_sender_ids: frozenset[str]
    require_approval: bool
    plan_exhausted: bool


def launch_problems(state: CampaignState, facts: LaunchFacts) -> list[str]:
    definition = state.definition
    problems: list[str] = []
    if not definition.steps:
        problems.append("the campaign has no steps")
    for i, step in enumerate(definition.steps, start=1):
        threaded = step.follows_up(i)  # sent as "Re: " + step 1's subject
        if not step.subject.strip() and not threaded:
            problems.append(f"step {i} has no subject")
        if not step.body_html.strip() and not (step.body_text or "").strip():
            problems.append(f"step {i} has no body")
    problems.extend(f"bad template in {p['field']}: {p['message']}" for p in template_problems(definition))
    sender_ids = definition.sender_ids
    if not sender_ids:
        problems.append("the campaign has no sender")
    else:
        unknown = [s for s in sender_ids if s not in facts.known_sender_ids]
        if unknown:
            problems.append(f"unknown sender(s): {', '.join(unknown)}")
        if not any(s in facts.active_sender_ids for s in sender_ids):
            problems.append("no active sender")
    return problems


def decide_launch(state: CampaignState, facts: LaunchFacts, now: datetime) -> list[Event]:
    if state.status != "draft":
        raise InvalidState(state.status, "launch")
    if facts.require_approval and not state.approved:
        raise Conflict("approval_required", "the workspace requires approval before launch")
    problems = launch_problems(state, facts)
    if problems:
        raise CampaignInvalid(problems)
    if facts.plan_exhausted:
        raise PlanLimitReached("the workspace's monthly limit is reached")
    launch_at = state.definition.schedule.launch_at
    status = "scheduled" if launch_at is not None and launch_at > now else "active"
    return [ev.CampaignLaunched(campaign_id=_id(state), status=status, launch_at=launch_at)]


def decide_activate(state: CampaignState, now: datetime) -> list[Event]:
    """A scheduled campaign whose launch_at has come becomes active (recorded by tick)."""
    if state.status != "scheduled":
        return []
    launch_at = state.definition.schedule.launch_at
    if launch_at is not None and launch_at > now:
        return []
    return [ev.CampaignActivated(campaign_id=_id(state))]


_TRANSITIONS: dict[str, tuple[frozenset[str], type[Event]]] = {
    "pause": (frozenset({"active", "scheduled"}), ev.CampaignPaused),
    "resume": (frozenset({"paused"}), ev.CampaignResumed),
    "cancel": (frozenset({"draft", "scheduled", "active", "paused"}), ev.CampaignCancelled),
    "archive": (frozenset({"completed", "cancelled"}), ev.CampaignArchived),
    "complete": (frozenset({"active"}), ev.CampaignCompleted),
}


def decide_transition(state: CampaignState, action: str) -> list[Event]:
    allowed, event_type = _TRANSITIONS[action]
    if state.status not in allowed:
        raise InvalidState(state.status, action)
    return [event_type(campaign_id=_id(state))]  # type: ignore[call-arg]


def decide_guard_pause(state: CampaignState, reason: str) -> list[Event]:
    """The engine pauses an active campaign whose bounce or complaint rate crossed its threshold.

    Unlike a user's pause this is no command that can fail: a campaign no longer active (paused
    already, completed, cancelled) has nothing left to protect, so nothing is recorded.
    """
    if state.status != "active" or state.deleted:
        return []
    return [ev.CampaignPaused(campaign_id=_id(state), reason=reason)]


def decide_delete(state: CampaignState) -> list[Event]:
    return [] if state.deleted else [ev.CampaignDeleted(campaign_id=_id(state))]


def decide_dispatch(state: CampaignState, pending_batches: list[int], batch_number: int | None) -> list[Event]:
    if state.status not in ("active", "scheduled", "paused"):
        raise InvalidState(state.status, "dispatch")
    if batch_number is None:
        candidates = sorted(b for b in pending_batches if b not in state.dispatched_batches)
        if not candidates:
            from engine.errors import NoPendingEnrollments

            raise NoPendingEnrollments("no batch is waiting to be dispatched")
        batch_number = candidates[0]
    elif batch_number not in pending_batches:
        from engine.errors import NoPendingEnrollments

        raise NoPendingEnrollments(f"batch {batch_number} has no pending enrollments")
    return [ev.CampaignBatchDispatched(campaign_id=_id(state), batch_number=batch_number)]


# What each node type's data may say (the source APIs' camelCase spellings included); anything
# else is refused, never silently dropped.
_NODE_DATA: dict[str, frozenset[str]] = {
    "start": frozenset(),
    "end": frozenset(),
    "delay": frozenset({"days", "hours", "minutes", "business_days", "businessDays"}),
    "email": frozenset({"subject", "body_html", "body", "body_text", "same_thread", "trackOpens", "trackClicks",
                        "track_opens", "track_clicks"}),
}


def compile_workflow(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    """Turn a one-path workflow graph (start -> ... -> end) into steps; delays add up."""
    nodes = {n["id"]: n for n in workflow.get("nodes", [])}
    edges: dict[str, str] = {}
    errors: list[dict[str, str]] = []
    for e in workflow.get("edges", []):
        src, dst = e.get("from") or e.get("from_"), e.get("to")
        if src in edges:
            errors.append({"field": "workflow.edges", "message": f"node {src} has two outgoing edges"})
        if src not in nodes or dst not in nodes:
            errors.append({"field": "workflow.edges", "message": f"edge {src} -> {dst} names an unknown node"})
        edges[str(src)] = str(dst)
    starts = [n for n in nodes.values() if n["type"] == "start"]
    if len(starts) != 1:
        errors.append({"field": "workflow.nodes", "message": "exactly one start node is required"})
    if errors:
        raise ValidationFailed(errors)
    for position, node in enumerate(workflow.get("nodes", [])):
        allowed = _NODE_DATA.get(node["type"], frozenset())
        for key in sorted(set(node.get("data") or {}) - allowed):
            errors.append({"field": f"workflow.nodes.{position}.data.{key}",
                           "message": f"a {node['type']} node takes no {key!r}"
                                      + (f" (it takes {', '.join(sorted(allowed))})" if allowed else "")})
    if errors:
        raise ValidationFailed(errors)
    steps: list[dict[str, Any]] = []
    delay = {"days": 0, "hours": 0, "minutes": 0, "business_days": False}
    current, seen = starts[0]["id"], set()
    while True:
        if current in seen:
            raise ValidationFailed([{"field": "workflow.edges", "message": "the workflow has a cycle"}])
        seen.add(current)
        node = nodes[current]
        data = node.get("data") or {}
        if node["type"] == "delay":
            for k in ("days", "hours", "minutes"):
                delay[k] += int(data.get(k, 0))
            delay["business_days"] = bool(data.get("business_days", data.get("businessDays",
                                                                             delay["business_days"])))
        elif node["type"] == "email":
            step = {"subject": data.get("subject", ""), "body_html": data.get("body_html", data.get("body", "")),
                    "body_text": data.get("body_text"), "delay": dict(delay),
                    "same_thread": bool(data.get("same_thread", True)), "node_id": str(node["id"])}
            for given, kept in (("trackOpens", "track_opens"), ("track_opens", "track_opens"),
                                ("trackClicks", "track_clicks"), ("track_clicks", "track_clicks")):
                if given in data:
                    step[kept] = bool(data[given])
            steps.append(step)
            delay = {"days": 0, "hours": 0, "minutes": 0, "business_days": False}
        elif node["type"] == "end":
            break
        if current not in edges:
            raise ValidationFailed([{"field": "workflow", "message": "the path does not reach an end node"}])
        current = edges[current]
    if len(seen) != len(nodes):
        raise ValidationFailed([{"field": "workflow.nodes", "message": "some nodes are not on the path"}])
    return steps


def _id(state: CampaignState) -> str:
    if state.id is None:
        raise LookupError("campaign does not exist")
    return state.id


__all__ = ["CampaignState", "LaunchFacts", "evolve", "format_time"]
