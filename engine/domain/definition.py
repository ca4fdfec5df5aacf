"""A campaign's definition as one typed, frozen value: steps, schedule, settings, senders.

The log keeps the definition as the JSON object the API stored (``campaign.created``'s
``definition``, merged with ``campaign.updated``'s ``changes`` and ``campaign.schedule_changed``'s
``schedule``), and so does the campaigns read model. Everything that decides with it (the
deciders, the planner, compose, the forecast, the reports) reads this value instead, built once
where the row or the stream is read: :meth:`CampaignDefinition.from_dict` parses it, and is the
upcaster too (a definition stored before a field existed gets that field's default), and
:meth:`CampaignDefinition.to_dict` gives the stored JSON shape back, key for key, so events and
API answers keep their bytes.

The defaults here are the contract's, and the API's request models take theirs from here, so
there is one copy of them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, cast

from engine.schedule.model import Delay, InvalidSchedule, ScheduleSpec
from engine.schedule.validation import SCHEDULE_DEFAULTS
from events.registry import format_time

__all__ = [
    "AutoEnroll",
    "CampaignDefinition",
    "CampaignSettings",
    "StepDefinition",
    "VariantDefinition",
    "WinnerRule",
    "definition_from_json",
    "schedule_to_dict",
]

JsonObject = dict[str, Any]
WinnerMetric = Literal["reply_rate", "open_rate", "click_rate"]


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _bool_or_none(value: object) -> bool | None:
    return None if value is None else bool(value)


def _extra(data: Mapping[str, Any], known: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    """Keys this code does not know, kept as they were so that nothing stored is ever dropped."""
    return tuple((key, copy.deepcopy(value)) for key, value in data.items() if key not in known)


def _object(value: object, what: str) -> Mapping[str, Any]:
    """``value`` as a JSON object; None is an empty one (an older or partial shape)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"the campaign definition's {what} must be an object")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantDefinition:
    """One A/B variant of a step; a subject or body it leaves out (None) is the step's own."""

    id: str
    subject: str | None = None
    body_html: str | None = None
    body_text: str | None = None
    weight: int = 1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], position: int) -> VariantDefinition:
        """A stored variant; one without an id gets A, B, ... by position (as validation stores it)."""
        own = data.get("id")
        return cls(id=str(own) if own else chr(ord("A") + position), subject=_text_or_none(data.get("subject")),
                   body_html=_text_or_none(data.get("body_html")), body_text=_text_or_none(data.get("body_text")),
                   weight=max(1, int(data.get("weight") or 1)))

    def to_dict(self) -> JsonObject:
        return {"id": self.id, "subject": self.subject, "body_html": self.body_html, "body_text": self.body_text,
                "weight": self.weight}


@dataclass(frozen=True, slots=True, kw_only=True)
class WinnerRule:
    """Auto-winner: once the step sent ``after_sends`` emails across its variants, the best variant
    by ``metric`` gets every later email of the step."""

    metric: WinnerMetric = "reply_rate"
    after_sends: int = 200

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WinnerRule:
        default = cls()
        return cls(metric=cast(WinnerMetric, str(data.get("metric") or default.metric)),
                   after_sends=int(data.get("after_sends") or default.after_sends))

    def to_dict(self) -> JsonObject:
        return {"metric": self.metric, "after_sends": self.after_sends}


def _delay_to_dict(delay: Delay) -> JsonObject:
    return {"days": delay.days, "hours": delay.hours, "minutes": delay.minutes, "business_days": delay.business_days}


_STEP_KEYS = ("subject", "body_html", "body_text", "delay", "same_thread", "variants", "winner", "node_id",
              "track_opens", "track_clicks")


@dataclass(frozen=True, slots=True, kw_only=True)
class StepDefinition:
    """One email of the sequence: its templates, the wait before it, threading, A/B variants and
    (from a workflow's email node) its node id and the tracking it turns on or off for itself."""

    subject: str = ""
    body_html: str = ""
    body_text: str | None = None
    delay: Delay = field(default_factory=Delay)
    same_thread: bool = True
    variants: tuple[VariantDefinition, ...] | None = None
    winner: WinnerRule | None = None
    node_id: str | None = None
    track_opens: bool | None = None
    track_clicks: bool | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, data: object) -> StepDefinition:
        step = _object(data, "steps")
        variants = step.get("variants")
        winner = step.get("winner")
        return cls(
            subject=str(step.get("subject") or ""),
            body_html=str(step.get("body_html") or ""),
            body_text=_text_or_none(step.get("body_text")),
            delay=Delay.from_dict(_object(step.get("delay"), "step delay")),
            same_thread=bool(step.get("same_thread", True)),
            variants=None if variants is None else tuple(
                VariantDefinition.from_dict(_object(variant, "variants"), position)
                for position, variant in enumerate(variants)),
            winner=None if not winner else WinnerRule.from_dict(_object(winner, "winner")),
            node_id=_text_or_none(step.get("node_id")),
            track_opens=_bool_or_none(step.get("track_opens")),
            track_clicks=_bool_or_none(step.get("track_clicks")),
            extra=_extra(step, _STEP_KEYS),
        )

    def to_dict(self) -> JsonObject:
        return {
            "subject": self.subject, "body_html": self.body_html, "body_text": self.body_text,
            "delay": _delay_to_dict(self.delay), "same_thread": self.same_thread,
            "variants": None if self.variants is None else [variant.to_dict() for variant in self.variants],
            "winner": None if self.winner is None else self.winner.to_dict(),
            "node_id": self.node_id, "track_opens": self.track_opens, "track_clicks": self.track_clicks,
            **{key: copy.deepcopy(value) for key, value in self.extra},
        }

    def variant_ids(self) -> list[str]:
        """The ids of the step's variants in order (empty without variants)."""
        return [variant.id for variant in self.variants or ()]

    def with_variant(self, variant: str | None) -> StepDefinition:
        """The step as variant ``variant`` sends it: the variant's subject and bodies where it gives
        them, the step's own otherwise. None, or an id the step does not have, is the step itself."""
        if variant is None:
            return self
        for candidate in self.variants or ():
            if candidate.id == variant:
                return dataclasses.replace(
                    self,
                    subject=self.subject if candidate.subject is None else candidate.subject,
                    body_html=self.body_html if candidate.body_html is None else candidate.body_html,
                    body_text=self.body_text if candidate.body_text is None else candidate.body_text)
        return self

    def follows_up(self, step_number: int) -> bool:
        """Whether the step, as step ``step_number``, is a follow-up in step 1's thread (step 1 never is)."""
        return step_number > 1 and self.same_thread


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoEnroll:
    """``settings.auto_enroll``: the lists and the rule tree (as an enroll request gives them) whose
    contacts the campaign takes by itself."""

    list_ids: tuple[str, ...] = ()
    filter: JsonObject | None = None

    def to_dict(self) -> JsonObject:
        return {"list_ids": list(self.list_ids), "filter": copy.deepcopy(self.filter)}


_SETTINGS_KEYS = ("stop_on_reply", "stop_on_company_reply", "ignore_out_of_office", "skip_if_enrolled_elsewhere",
                  "skip_previously_bounced", "skip_previously_replied", "verify_mx", "allow_free_email_domains",
                  "track_opens", "track_clicks", "unsubscribe_link", "bounce_rate_threshold",
                  "complaint_rate_threshold", "soft_bounce_limit", "manual_batches", "evergreen", "auto_enroll")
_FLOAT_SETTINGS = frozenset({"bounce_rate_threshold", "complaint_rate_threshold"})


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignSettings:
    """A campaign's settings with the contract's defaults (section 3 and its additions)."""

    stop_on_reply: bool = True
    stop_on_company_reply: bool = False
    ignore_out_of_office: bool = True
    skip_if_enrolled_elsewhere: bool = False
    skip_previously_bounced: bool = True
    skip_previously_replied: bool = False
    verify_mx: bool = False
    allow_free_email_domains: bool = True
    track_opens: bool = False
    track_clicks: bool = False
    unsubscribe_link: bool = True
    bounce_rate_threshold: float = 8.0  # percent of attempts, checked after 20
    complaint_rate_threshold: float = 0.3  # percent of sent emails reported as spam (Gmail's line for bulk)
    soft_bounce_limit: int = 3  # soft bounces in a row that suppress an address
    manual_batches: bool = False
    evergreen: bool = False  # stays active with nothing open, until told to complete
    auto_enroll: AutoEnroll | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, data: object) -> CampaignSettings:
        settings = _object(data, "settings")
        default = cls()
        values: dict[str, Any] = {}
        for name in _SETTINGS_KEYS[:-1]:
            value = settings.get(name)
            if value is None:
                continue  # an older shape: the default
            values[name] = float(value) if name in _FLOAT_SETTINGS else \
                int(value) if name == "soft_bounce_limit" else bool(value)
        auto = settings.get("auto_enroll")
        if auto is not None:
            auto = _object(auto, "settings.auto_enroll")
            values["auto_enroll"] = AutoEnroll(list_ids=tuple(str(lid) for lid in auto.get("list_ids") or ()),
                                               filter=copy.deepcopy(auto.get("filter")))
        return dataclasses.replace(default, **values, extra=_extra(settings, _SETTINGS_KEYS))

    def to_dict(self) -> JsonObject:
        out: JsonObject = {name: getattr(self, name) for name in _SETTINGS_KEYS[:-1]}
        out["auto_enroll"] = None if self.auto_enroll is None else self.auto_enroll.to_dict()
        out.update((key, copy.deepcopy(value)) for key, value in self.extra)
        return out


def schedule_to_dict(schedule: ScheduleSpec) -> JsonObject:
    """The schedule as the definition stores it: the contract's shape, ``launch_at`` in the log's
    time format (:func:`events.registry.format_time`)."""
    out = schedule.to_dict()
    if schedule.launch_at is not None:
        out["launch_at"] = format_time(schedule.launch_at)
    return out


def _schedule_from(data: object) -> ScheduleSpec:
    """The stored schedule; a field it cannot have (stored before the API checked schedules with
    :func:`~engine.schedule.validation.validate_schedule`) takes its default, as the planner
    could never have used it."""
    raw = {key: value for key, value in _object(data, "schedule").items() if key in SCHEDULE_DEFAULTS}
    for _ in range(len(SCHEDULE_DEFAULTS)):
        try:
            return ScheduleSpec.from_dict(raw)
        except InvalidSchedule as exc:
            refused = {name for name, _ in exc.problems}
            raw = {key: value for key, value in raw.items() if key not in refused}
    return ScheduleSpec()


_TOP_KEYS = ("name", "description", "emoji", "folder", "tags", "goal", "outreach_id", "sender_ids", "schedule",
             "settings", "steps", "workflow", "variant_winners")


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignDefinition:
    """The whole campaign body: what the API took at create and edits, as one typed value.

    ``variant_winners``: (step, variant id) recorded by ``campaign.variant_won``, which the
    campaigns read model keeps in the stored definition (the tick composes from that row alone).
    ``tags``, ``description`` and ``workflow`` may be null as a PATCH left them.
    """

    name: str
    description: str | None = ""
    emoji: str | None = None
    folder: str | None = None
    tags: tuple[str, ...] | None = ()
    goal: str | None = None
    outreach_id: str | None = None
    sender_ids: tuple[str, ...] = ()
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    settings: CampaignSettings = field(default_factory=CampaignSettings)
    steps: tuple[StepDefinition, ...] = ()
    workflow: JsonObject | None = None
    variant_winners: tuple[tuple[int, str], ...] = ()
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CampaignDefinition:
        """Parse a stored definition of any age (this is its upcaster); ValueError for one that is
        no object or whose parts have the wrong kinds."""
        definition = _object(data, "definition")
        tags = definition.get("tags", [])
        steps = definition.get("steps") or []
        if not isinstance(steps, Sequence) or isinstance(steps, str):
            raise ValueError("the campaign definition's steps must be a list")
        winners = _object(definition.get("variant_winners"), "variant_winners")
        workflow = definition.get("workflow")
        return cls(
            name=str(definition.get("name") or ""),
            description=_text_or_none(definition.get("description", "")),
            emoji=_text_or_none(definition.get("emoji")),
            folder=_text_or_none(definition.get("folder")),
            tags=None if tags is None else tuple(str(tag) for tag in tags),
            goal=_text_or_none(definition.get("goal")),
            outreach_id=_text_or_none(definition.get("outreach_id")),
            sender_ids=tuple(str(sid) for sid in definition.get("sender_ids") or ()),
            schedule=_schedule_from(definition.get("schedule")),
            settings=CampaignSettings.from_dict(definition.get("settings")),
            steps=tuple(StepDefinition.from_dict(step) for step in steps),
            workflow=None if workflow is None else copy.deepcopy(dict(_object(workflow, "workflow"))),
            variant_winners=tuple(sorted((int(step), str(variant)) for step, variant in winners.items())),
            extra=_extra(definition, _TOP_KEYS),
        )

    def to_dict(self) -> JsonObject:
        """The stored JSON shape (as the API's models dump it), a fresh object the caller may change."""
        out: JsonObject = {
            "name": self.name, "description": self.description, "emoji": self.emoji, "folder": self.folder,
            "tags": None if self.tags is None else list(self.tags), "goal": self.goal,
            "outreach_id": self.outreach_id, "sender_ids": list(self.sender_ids),
            "schedule": schedule_to_dict(self.schedule), "settings": self.settings.to_dict(),
            "steps": [step.to_dict() for step in self.steps], "workflow": copy.deepcopy(self.workflow),
        }
        if self.variant_winners:
            out["variant_winners"] = {str(step): variant for step, variant in self.variant_winners}
        out.update((key, copy.deepcopy(value)) for key, value in self.extra)
        return out

    def with_changes(self, changes: Mapping[str, Any]) -> CampaignDefinition:
        """The definition after an edit (``campaign.updated``'s changes: whole top-level fields)."""
        if not changes:
            return self
        return CampaignDefinition.from_dict({**self.to_dict(), **changes})

    def with_schedule(self, schedule: Mapping[str, Any]) -> CampaignDefinition:
        """The definition after ``campaign.schedule_changed``."""
        return dataclasses.replace(self, schedule=_schedule_from(schedule))

    def step(self, step_number: int) -> StepDefinition:
        """Step ``step_number`` (1-based); ValueError when the campaign has no such step."""
        if not 1 <= step_number <= len(self.steps):
            raise ValueError(f"step {step_number} does not exist (the campaign has {len(self.steps)})")
        return self.steps[step_number - 1]

    def winners(self) -> dict[int, str]:
        """Step number -> the variant recorded as that step's winner."""
        return dict(self.variant_winners)


@lru_cache(maxsize=4096)
def definition_from_json(text: str) -> CampaignDefinition:
    """The definition of a campaigns row's JSON text, parsed once per text: the tick, the guards and
    the reports read the same rows many times a second, and an edit changes the text. The value is
    shared by every caller: read it, never change what its JSON parts (``workflow``, an
    auto-enroll ``filter``) hold (:meth:`CampaignDefinition.to_dict` gives copies)."""
    return CampaignDefinition.from_dict(json.loads(text))
