"""Campaigns API: templates (with preview and checks), broadcast campaigns, trigger scenarios, reports.

Handlers are thin: ``opencdp.campaigns`` validates (a bad definition is a 422 naming the field:
``steps[2].template``, ``trigger.segment``, ``channel``), plans and reports. Saving stores a
draft; ``activate`` validates again against the store as it is then (a segment deleted since,
a channel no longer configured) and starts it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request

from opencdp.campaigns import (
    broadcast,
    library,
    outbox,
    recipients,
    reports,
    scenarios,
    store,
    templates,
)
from opencdp.campaigns import context as contexts
from opencdp.campaigns.tracking import Links, MessageRef
from opencdp.identity.profiles import canonical_ids
from opencdp.storage.base import Backend
from opencdp.web.auth import AuthRoute, Principal, require_scope

router = APIRouter(prefix="/api/v1", tags=["campaigns"], route_class=AuthRoute)
Reader = Annotated[Principal, Depends(require_scope("read"))]
Writer = Annotated[Principal, Depends(require_scope("write"))]
Json = Annotated[dict[str, Any], Body()]


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def _runtime(request: Request) -> Any:
    return request.app.state.campaigns


def _settings(request: Request) -> Any:
    return request.app.state.settings


# -- templates ----------------------------------------------------------------------------------
@router.post("/templates", summary="Save a template (checked: syntax, sandbox, variables)", status_code=201)
def save_template(request: Request, _: Writer, body: Json) -> dict[str, Any]:
    template = templates.Template.from_dict(body)
    templates.validate(template)
    stored = store.save(_backend(request), store.TEMPLATE, template.template_id, body.get("name") or template.template_id,
                        template.to_dict(), status=store.ACTIVE)
    return stored.to_dict()


@router.get("/templates", summary="List templates")
def list_templates(request: Request, _: Reader) -> list[dict[str, Any]]:
    return [s.to_dict() for s in store.list_all(_backend(request), store.TEMPLATE)]


@router.get("/templates/{template_id}", summary="One template")
def get_template(request: Request, _: Reader, template_id: str) -> dict[str, Any]:
    return store.require(_backend(request), store.TEMPLATE, template_id).to_dict()


@router.delete("/templates/{template_id}", summary="Delete a template")
def delete_template(request: Request, _: Writer, template_id: str) -> dict[str, str]:
    store.delete(_backend(request), store.TEMPLATE, template_id)
    return {"deleted": template_id}


def preview_for(request: Request, template: templates.Template, profile_id: str | None, params: dict[str, Any]) -> dict[str, Any]:
    backend = _backend(request)
    runtime = _runtime(request)
    profile = canonical_ids(backend, [profile_id]).get(profile_id, profile_id) if profile_id else "preview"
    person = recipients.load(backend, [profile])[profile] if profile_id else recipients.Recipient(profile)
    ref = MessageRef("preview", "preview", "preview", profile, "A", template.channel)
    links = Links(_settings(request).campaign_base_url.rstrip("/"), runtime.signer, ref)
    ctx = contexts.build(person, params, campaign={"id": "preview", "name": "Preview"}, urls=links.urls(),
                         catalogue=runtime.sender.catalogue, variant="A", message_id="preview")
    found = templates.check(template, ctx)
    out: dict[str, Any] = {"check": found.to_dict()}
    if found.ok:
        rendered = templates.render(template, ctx)
        out.update(subject=rendered.subject, html=rendered.html, text=rendered.text)
    return out


@router.post("/templates/{template_id}/preview", summary="Render a saved template for a profile")
def preview(request: Request, _: Reader, template_id: str, body: Json) -> dict[str, Any]:
    stored = store.require(_backend(request), store.TEMPLATE, template_id)
    template = templates.Template.from_dict(stored.definition, template_id)
    return preview_for(request, template, body.get("profile_id"), dict(body.get("params") or {}))


@router.post("/templates/check", summary="Check and preview a template without saving it")
def check_template(request: Request, _: Reader, body: Json) -> dict[str, Any]:
    template = templates.Template.from_dict(body.get("template") or {}, (body.get("template") or {}).get("id") or "draft")
    return preview_for(request, template, body.get("profile_id"), dict(body.get("params") or {}))


# -- campaigns and scenarios ----------------------------------------------------------------------
def _validate(request: Request, kind: str, definition: dict[str, Any]) -> dict[str, Any]:
    channels = _runtime(request).channels
    if kind == store.CAMPAIGN:
        return broadcast.validate(_backend(request), channels, definition)
    return scenarios.validate(_backend(request), channels, definition)


def _save(request: Request, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    object_id = store.check_id(body.get("id"))
    definition = {k: v for k, v in body.items() if k not in ("id", "name", "status", "created_at", "updated_at")}
    checked = _validate(request, kind, definition)
    return store.save(_backend(request), kind, object_id, body.get("name") or object_id, checked).to_dict()


@router.post("/campaigns", summary="Save a broadcast campaign (draft; validated)", status_code=201)
def save_campaign(request: Request, _: Writer, body: Json) -> dict[str, Any]:
    return _save(request, store.CAMPAIGN, body)


@router.post("/scenarios", summary="Save a trigger scenario (draft; validated)", status_code=201)
def save_scenario(request: Request, _: Writer, body: Json) -> dict[str, Any]:
    return _save(request, store.SCENARIO, body)


@router.get("/campaigns", summary="List campaigns")
def list_campaigns(request: Request, _: Reader) -> list[dict[str, Any]]:
    return [s.to_dict() for s in store.list_all(_backend(request), store.CAMPAIGN)]


@router.get("/scenarios", summary="List scenarios")
def list_scenarios(request: Request, _: Reader) -> list[dict[str, Any]]:
    return [s.to_dict() for s in store.list_all(_backend(request), store.SCENARIO)]


@router.get("/scenarios/library", summary="Ready-made scenarios")
def scenario_library(_: Reader) -> list[dict[str, Any]]:
    return [{"name": n, "title": library.SCENARIOS[n]["name"], "definition": library.SCENARIOS[n]} for n in library.names()]


@router.post("/scenarios/library/{name}", summary="Install a ready-made scenario (draft) with its templates", status_code=201)
def install_scenario(request: Request, _: Writer, name: str, body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    return library.install(_backend(request), name, (body or {}).get("id")).to_dict()


@router.get("/campaigns/{campaign_id}", summary="One campaign, with outbox counts")
def get_campaign(request: Request, _: Reader, campaign_id: str) -> dict[str, Any]:
    found = store.require(_backend(request), store.CAMPAIGN, campaign_id).to_dict()
    return {**found, "outbox": outbox.counts(_backend(request), campaign_id)}


@router.get("/scenarios/{scenario_id}", summary="One scenario, with outbox counts")
def get_scenario(request: Request, _: Reader, scenario_id: str) -> dict[str, Any]:
    found = store.require(_backend(request), store.SCENARIO, scenario_id).to_dict()
    return {**found, "outbox": outbox.counts(_backend(request), scenario_id)}


@router.post("/campaigns/{campaign_id}/activate", status_code=202,
             summary="Validate, then plan the outbox in the background and start sending")
def activate_campaign(request: Request, _: Writer, campaign_id: str) -> dict[str, Any]:
    """Answers at once: ``status`` is ``planning`` until every row is planned (then ``active``); poll
    ``GET /api/v1/campaigns/{id}`` for ``planning`` (audience, planned, state, error) and the outbox counts.

    A bad definition is a 422 naming the field, before anything is planned. Activating a campaign
    that is being planned answers its current state.
    """
    runtime = _runtime(request)
    backend = _backend(request)
    if runtime.planning(campaign_id):
        current = store.require(backend, store.CAMPAIGN, campaign_id).to_dict()
    else:
        current = broadcast.begin(backend, runtime.channels, campaign_id, dt.datetime.now(dt.UTC)).to_dict()
        runtime.plan_in_background(campaign_id)
    return {**current, "poll": f"/api/v1/campaigns/{campaign_id}"}


@router.post("/scenarios/{scenario_id}/activate", summary="Validate and start a scenario")
def activate_scenario(request: Request, _: Writer, scenario_id: str) -> dict[str, Any]:
    backend = _backend(request)
    stored = store.require(backend, store.SCENARIO, scenario_id)
    checked = scenarios.validate(backend, _runtime(request).channels, stored.definition)
    result = store.save(backend, store.SCENARIO, scenario_id, stored.name, checked, status=store.ACTIVE).to_dict()
    _runtime(request).engine.scenarios(refresh=True)
    return result


@router.post("/{kind}/{object_id}/pause", summary="Pause a campaign or scenario")
def pause(request: Request, _: Writer, kind: str, object_id: str) -> dict[str, Any]:
    singular = {"campaigns": store.CAMPAIGN, "scenarios": store.SCENARIO}.get(kind)
    if singular is None:
        raise store.NotFound(f"`{kind}` is not campaigns or scenarios", field="kind")
    result = store.set_status(_backend(request), singular, object_id, store.PAUSED).to_dict()
    _runtime(request).engine.scenarios(refresh=True)
    return result


@router.get("/{kind}/{object_id}/report", summary="Per-variant results, significance, uplift and attributed revenue")
def report(request: Request, _: Reader, kind: str, object_id: str, attribution_hours: float | None = None) -> dict[str, Any]:
    singular = {"campaigns": store.CAMPAIGN, "scenarios": store.SCENARIO}.get(kind)
    if singular is None:
        raise store.NotFound(f"`{kind}` is not campaigns or scenarios", field="kind")
    store.require(_backend(request), singular, object_id)
    settings = _settings(request)
    return reports.campaign_report(_backend(request), object_id,
                                   attribution_hours=attribution_hours or settings.campaign_attribution_hours,
                                   conversion_event=settings.campaign_conversion_event)
