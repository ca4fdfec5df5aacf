"""Repeated unknown API keys from one client are slowed down: 429 with Retry-After.

Given a client sending unknown keys; when it has failed 20 times within a minute; then the next
request answers 429 rate_limited with a Retry-After header (before any key check), and a minute
later (on the engine clock) the client may try again.
"""

from __future__ import annotations

from datetime import timedelta

import httpx

from engine import CampaignEngine, ManualClock, create_app


async def test_unknown_keys_are_rate_limited_per_client(engine: CampaignEngine, clock: ManualClock) -> None:
    ws = await engine.create_workspace("acme")
    app = create_app(engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        wrong = {"Authorization": "Bearer ce_not-a-real-key"}
        for _ in range(20):
            assert (await http.get("/v1/account", headers=wrong)).status_code == 401
        blocked = await http.get("/v1/account", headers=wrong)
        assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "rate_limited"
        assert int(blocked.headers["Retry-After"]) >= 1
        clock.advance(timedelta(minutes=1))
        good = await http.get("/v1/account", headers={"Authorization": f"Bearer {ws.api_key}"})
        assert good.status_code == 200
