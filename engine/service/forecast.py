"""Forecasts: the planner run forward in simulated time on an in-memory copy of the queue."""

from __future__ import annotations

from typing import Any

from engine.errors import ValidationFailed
from engine.schedule import forecast_by_day, forecast_range, simulate
from engine.service.base import ServiceBase
from engine.service.planner_inputs import load_inputs


def _days(days: Any) -> int:
    try:
        n = int(days)
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= 90:
        raise ValidationFailed([{"field": "days", "message": "days must be between 1 and 90"}])
    return n


class ForecastService(ServiceBase):
    async def forecast(self, ws: str, cid: str, days: int = 7) -> dict[str, Any]:
        """Emails per local day from today if nothing but time happens; every campaign sharing
        the senders is simulated together, since they compete for the same limits."""
        n = _days(days)
        state, _ = await self._campaign(ws, cid)
        tz = (state.definition.get("schedule") or {}).get("timezone") or "UTC"
        now = self.now()
        async with self.store.reading() as conn:
            inputs = await load_inputs(conn, now, workspace_id=ws)
        start, until = forecast_range(now, tz, n)
        sends = simulate(now, until, inputs.items, inputs.campaigns, inputs.senders, inputs.usage,
                         inputs.monthly_limits)
        by_day = forecast_by_day([s for s in sends if s.campaign_id == cid], tz, start, n)
        return {"timezone": tz, "days": by_day, "total": sum(d["count"] for d in by_day)}

    async def workspace_forecast(self, ws: str, days: int = 7) -> dict[str, Any]:
        n = _days(days)
        now = self.now()
        async with self.store.reading() as conn:
            inputs = await load_inputs(conn, now, workspace_id=ws)
        start, until = forecast_range(now, "UTC", n)
        sends = simulate(now, until, inputs.items, inputs.campaigns, inputs.senders, inputs.usage,
                         inputs.monthly_limits)
        by_day = forecast_by_day(sends, "UTC", start, n)
        return {"timezone": "UTC", "days": by_day, "total": sum(d["count"] for d in by_day)}
