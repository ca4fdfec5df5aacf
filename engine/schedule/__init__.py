"""Scheduling and forecasting: send windows, spacing, limits and the one planner for tick and forecast.

Everything here is pure: no I/O, no clock. Time always comes in as a timezone-aware argument and
every instant that comes out is UTC.
"""

from engine.schedule.cron import next_fire_after, next_fire_at_or_after, parse_cron
from engine.schedule.model import (
    CampaignPlan,
    Delay,
    InvalidSchedule,
    LastSend,
    QueueItem,
    ScheduleSpec,
    SenderPlan,
    SendRecord,
    Usage,
    Warmup,
)
from engine.schedule.planner import Assignment, Plan, PlanRound, follow_up, next_due_at, plan
from engine.schedule.simulate import (
    SimulatedSend,
    default_email_id,
    forecast_by_day,
    forecast_range,
    simulate,
)
from engine.schedule.slots import (
    effective_daily_limit,
    next_allowed_at,
    seeded_wait_seconds,
    stable_seed,
)
from engine.schedule.validation import SCHEDULE_DEFAULTS, validate_schedule
from engine.schedule.windows import (
    Window,
    add_delay,
    effective_timezone,
    in_window,
    next_window_open,
    window_close,
    window_for,
)

__all__ = [
    "SCHEDULE_DEFAULTS",
    "Assignment",
    "CampaignPlan",
    "Delay",
    "InvalidSchedule",
    "LastSend",
    "Plan",
    "PlanRound",
    "QueueItem",
    "ScheduleSpec",
    "SendRecord",
    "SenderPlan",
    "SimulatedSend",
    "Usage",
    "Warmup",
    "Window",
    "add_delay",
    "default_email_id",
    "effective_daily_limit",
    "effective_timezone",
    "follow_up",
    "forecast_by_day",
    "forecast_range",
    "in_window",
    "next_allowed_at",
    "next_due_at",
    "next_fire_after",
    "next_fire_at_or_after",
    "next_window_open",
    "parse_cron",
    "plan",
    "seeded_wait_seconds",
    "simulate",
    "stable_seed",
    "validate_schedule",
    "window_close",
    "window_for",
]
