"""The links inside messages: click redirect, open pixel, one-click unsubscribe, preference centre.

These routes are public (the recipient's mail client or browser calls them); what authorises
them is the signed token (``opencdp.campaigns.tracking``): it names the message and the
profile, and a changed token is a 404. The click redirect only goes to a URL whose signature
the link carries, so it cannot be used as an open redirect.

The click goes through the identity stage carrying the profile's own strongest identifier, the
per-profile click token and the browser's ``ajs_anonymous_id`` cookie when the shop shares the
domain: identity resolution then ties that browser (and any later event that carries
``ocdp_click`` in its page URL) to the profile.

Providers' delivery receipts, bounces and complaints (``/m/receipts/...``) are not links and are
authorised differently (provider signatures, a receipt secret): they live in ``web/receipts.py``,
mounted on this router.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlglot import exp

from opencdp.campaigns import tracking
from opencdp.campaigns.recipients import CONSENT_CHANNEL
from opencdp.campaigns.tracking import BadToken, MessageRef, with_parameter
from opencdp.consent.model import CONSENT_UPDATED, UNSUBSCRIBED
from opencdp.consent.store import current_consents
from opencdp.identity.identifiers import CLICK_PARAMETER
from opencdp.identity.profiles import members_of
from opencdp.identity.stage import stage_for
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, IDENTITIES, ORDER_LINES
from opencdp.web import receipts

router = APIRouter(prefix="/m", tags=["message links"])
_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_STRONG = ("user_id", "email", "phone", "loyalty_card")


def _runtime(request: Request) -> Any:
    return request.app.state.campaigns


def _ref(request: Request, token: str) -> MessageRef:
    ref: MessageRef = _runtime(request).signer.read(token)
    return ref


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _strong_identifier(backend: Backend, profile_id: str) -> tuple[str, str] | None:
    ids = list(members_of(backend, [profile_id]))
    query = exp.select("kind", "value").from_(backend.table_ref(IDENTITIES)).where(
        exp.and_(exp.column("profile_id").isin(*(exp.Literal.string(i) for i in ids)), exp.column("deleted").not_())
    )
    rows = backend.select(query).to_pylist()
    for kind in (*_STRONG, "anonymous_id"):
        for row in rows:
            if row["kind"] == kind:
                return kind, row["value"]
    return None


def record_click(backend: Backend, ref: MessageRef, url: str, click_token: str, anonymous_id: str | None) -> None:
    """A Message Clicked event, resolved by the identity stage so the click token joins the profile."""
    now = _now()
    properties = {**ref.properties(), "url": url, CLICK_PARAMETER: click_token}
    strong = _strong_identifier(backend, ref.profile_id)
    context: dict[str, Any] = {"externalIds": [{"type": strong[0], "id": strong[1]}]} if strong else {}
    events = tracking.event_rows(tracking.CLICKED, [ref], now, extra=[{"url": url, CLICK_PARAMETER: click_token}], unique=False)
    row = events.to_pylist()[0]
    row.update(properties=json.dumps(properties), context=json.dumps(context), anonymous_id=anonymous_id)
    table = pa.Table.from_pylist([row], schema=EVENTS.arrow_schema)
    if strong or anonymous_id:
        table, _ = stage_for(backend).resolve(table, ORDER_LINES.empty())
    if table.column("profile_id")[0].as_py() is None:
        table = table.set_column(table.schema.get_field_index("profile_id"), "profile_id", pa.array([ref.profile_id]))
    backend.load(LoadBatch(table, ORDER_LINES.empty(), dedupe_since=now - dt.timedelta(minutes=5)))


@router.get("/c/{token}", summary="Click redirect (records Message Clicked)", include_in_schema=False)
def click(request: Request, token: str, u: str = "", k: str = "") -> Response:
    runtime = _runtime(request)
    ref = _ref(request, token)
    if not u.startswith(("http://", "https://")) or k != runtime.signer.link_key(token, u):
        raise BadToken("the link is not valid (its address was changed)")
    click_token = runtime.signer.click_token(ref.profile_id)
    record_click(request.app.state.backend, ref, u, click_token, request.cookies.get("ajs_anonymous_id"))
    return RedirectResponse(with_parameter(u, CLICK_PARAMETER, click_token), status_code=302)


@router.get("/o/{token}.gif", summary="Open pixel (records Message Opened once)", include_in_schema=False)
def opened(request: Request, token: str) -> Response:
    try:
        ref = _ref(request, token)
    except BadToken:
        return Response(_GIF, media_type="image/gif")  # never a broken image in the mail client
    tracking.record(request.app.state.backend, tracking.event_rows(tracking.OPENED, [ref], _now()))
    return Response(_GIF, media_type="image/gif", headers={"Cache-Control": "no-store"})


def unsubscribe(backend: Backend, ref: MessageRef, *, all_topics: bool = False) -> None:
    """Opt out of the message's channel and topic (a consent event) and record Message Unsubscribed."""
    now = _now()
    channel = CONSENT_CHANNEL.get(ref.channel, ref.channel)
    topic = "marketing" if all_topics else ref.topic
    consent = tracking.event_rows(UNSUBSCRIBED, [ref], now, extra=[{"channel": channel, "topic": topic,
                                                                    "source": f"campaign:{ref.campaign_id}"}])
    tracking.record(backend, consent)
    tracking.record(backend, tracking.event_rows(tracking.UNSUBSCRIBED, [ref], now, extra=[{"topic": topic}]))


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto">{body}</body></html>"""


@router.get("/u/{token}", summary="Unsubscribe page", include_in_schema=False)
def unsubscribe_page(request: Request, token: str) -> HTMLResponse:
    _ref(request, token)
    body = (f'<h1>Unsubscribe</h1><form method="post" action="/m/u/{html.escape(token)}">'
            '<button type="submit">Unsubscribe me</button></form>')
    return HTMLResponse(_PAGE.format(title="Unsubscribe", body=body))


@router.post("/u/{token}", summary="One-click unsubscribe (RFC 8058)", include_in_schema=False)
def unsubscribe_post(request: Request, token: str) -> HTMLResponse:
    ref = _ref(request, token)
    unsubscribe(request.app.state.backend, ref)
    return HTMLResponse(_PAGE.format(title="Unsubscribed", body="<h1>You are unsubscribed.</h1>"))


@router.get("/p/{token}", summary="Preference centre", include_in_schema=False)
def preferences(request: Request, token: str) -> HTMLResponse:
    ref = _ref(request, token)
    channel = CONSENT_CHANNEL.get(ref.channel, ref.channel)
    current = {c.topic: c.status.value for c in current_consents(request.app.state.backend, ref.profile_id) if c.channel == channel}
    topics = sorted(set(current) | {ref.topic, "marketing"})
    rows = "".join(
        f'<p><label><input type="checkbox" name="{html.escape(t)}" value="opted_in"'
        f'{" checked" if current.get(t) == "opted_in" else ""}> {html.escape(t)}</label></p>'
        for t in topics
    )
    body = (f'<h1>Your {html.escape(channel)} subscriptions</h1><form method="post" action="/m/p/{html.escape(token)}">'
            f'{rows}<input type="hidden" name="_topics" value="{html.escape(",".join(topics))}"><button>Save</button></form>')
    return HTMLResponse(_PAGE.format(title="Preferences", body=body))


@router.post("/p/{token}", summary="Save preferences", include_in_schema=False)
async def preferences_post(request: Request, token: str) -> HTMLResponse:
    ref = _ref(request, token)
    form = dict((await request.form()).items())
    channel = CONSENT_CHANNEL.get(ref.channel, ref.channel)
    topics = [t for t in str(form.get("_topics", "")).split(",") if t]
    now = _now()
    changes = [{"channel": channel, "topic": t, "status": "opted_in" if form.get(t) == "opted_in" else "opted_out",
                "source": f"preferences:{ref.campaign_id}"} for t in topics]
    refs = [ref] * len(changes)
    if changes:
        tracking.record(request.app.state.backend, tracking.event_rows(CONSENT_UPDATED, refs, now, extra=changes, unique=False))
    return HTMLResponse(_PAGE.format(title="Saved", body="<h1>Your preferences are saved.</h1>"))


# -- provider callbacks: /m/receipts/... (web/receipts.py) ----------------------------------------
router.include_router(receipts.router)
