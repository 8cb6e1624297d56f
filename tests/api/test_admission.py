"""Admission control sheds tracking load with 429 + Retry-After before reading bodies."""

from __future__ import annotations

import asyncio

import httpx
from starlette.types import Receive, Scope, Send

from opencdp.web.admission import TrackingAdmission


def test_requests_beyond_the_in_flight_budget_get_429_with_retry_after() -> None:
    release = asyncio.Event()
    served: list[str] = []

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        served.append(scope["path"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    admission = TrackingAdmission(slow_app, max_bytes=1000, unknown_size=500)

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=admission)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = asyncio.create_task(client.post("/v1/batch", content=b"x" * 800))
            while not served:
                await asyncio.sleep(0)
            shed = await client.post("/v1/batch", content=b"y" * 800)
            admin = asyncio.create_task(client.get("/api/v1/status"))  # never shed
            await asyncio.sleep(0.01)
            release.set()
            return [await first, shed, await admin]

    first, shed, admin = asyncio.run(scenario())
    assert first.status_code == 200
    assert shed.status_code == 429
    assert shed.headers["Retry-After"] == "1"
    assert shed.json()["error"] == "too_many_requests"
    assert admin.status_code == 200
    assert admission.in_flight == 0
