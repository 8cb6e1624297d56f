"""Trigger scenarios (journeys): what starts them, their steps, and the checks before activation.

A scenario definition (JSON)::

    {"trigger": {"type": "event", "event": "Cart Updated", "where": {"properties.value": {">": 1000}}},
     "audience": {"segment": "cart_of_category", "params": {"category": "properties.category"}},
     "reentry": {"policy": "after_exit", "cooldown_hours": 24},
     "goal": {"event": "Order Completed"},
     "steps": [{"id": "wait1", "type": "wait", "duration": "1h"},
               {"id": "mail", "type": "send", "channel": "email", "template": "cart_reminder"},
               {"id": "opened", "type": "condition", "event": "Message Opened", "then": "done", "else": "sms"},
               {"id": "sms", "type": "send", "channel": "sms", "template": "cart_sms"},
               {"id": "done", "type": "exit"}]}

Triggers: ``event`` (name and ``where`` filters on the event's columns or ``properties.x`` /
``traits.x`` paths: a value for equality or ``{op: value}`` with ``= != > >= < <= in``);
``segment_entered`` / ``segment_exited``; ``date`` (``trait`` such as ``birthday`` or
``bonus_expires_at``; ``days_before``; ``annual`` for anniversaries; ``at`` local time);
``back_in_stock`` / ``price_drop`` (profiles that had an ``interest`` event on the product within
``within_days``; ``min_drop_percent``).

Steps: ``wait`` (``duration`` like ``30m``, ``2h``, ``3d``, or ``until`` a local time of day),
``condition`` (``segment``, ``trait`` with ``op``/``value``, or ``event`` since entry; ``then`` /
``else``), ``split`` (random / A-B: ``branches`` of ``{name, weight, next}``; a branch named
``control`` is a holdout), ``send`` (``channel``, ``template``, ``topic``, ``transactional``),
``update_trait`` (``trait``, ``value``), ``webhook`` (``url``), ``exit``. ``next`` names the
following step (default: the next in the list; ``null`` ends). A goal event exits the journey.

``validate`` refuses, naming the field: unknown step types or references, cycles, unknown
segments, channels that are not configured, templates that are missing or invalid.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from opencdp.campaigns.broadcast import _clock_text, check_segment, check_template
from opencdp.campaigns.channels import urlguard
from opencdp.campaigns.registry import Channels
from opencdp.campaigns.store import DefinitionError
from opencdp.consent.model import TRANSACTIONAL, topic_of
from opencdp.storage.base import Backend

TRIGGERS = ("event", "segment_entered", "segment_exited", "date", "back_in_stock", "price_drop")
STEPS = ("wait", "condition", "split", "send", "update_trait", "webhook", "exit")
REENTRY = ("never", "always", "after_exit")
OPS = ("=", "!=", ">", ">=", "<", "<=", "in")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(value: Any, field: str) -> dt.timedelta:
    if isinstance(value, int | float) and value >= 0:
        return dt.timedelta(seconds=float(value))
    match = _DURATION.fullmatch(str(value).strip()) if isinstance(value, str) else None
    if match is None:
        raise DefinitionError(f"`{field}` {value!r} must be a duration like 30m, 2h, 3d (or seconds)", field=field)
    return dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _filters(where: Any, field: str) -> None:
    if where is None:
        return
    if not isinstance(where, dict):
        raise DefinitionError(f"`{field}` must map a field (e.g. properties.category) to a value or {{op: value}}", field=field)
    for key, value in where.items():
        if isinstance(value, dict):
            for op in value:
                if op not in OPS:
                    raise DefinitionError(f"`{field}.{key}` operator {op!r} is not one of {' '.join(OPS)}", field=f"{field}.{key}")


def _trigger(backend: Backend, trigger: Any) -> None:
    if not isinstance(trigger, dict) or trigger.get("type") not in TRIGGERS:
        raise DefinitionError(f"`trigger.type` must be one of {', '.join(TRIGGERS)}", field="trigger.type")
    kind = trigger["type"]
    if kind == "event":
        if not isinstance(trigger.get("event"), str) or not trigger["event"]:
            raise DefinitionError("`trigger.event` is required: the event name that starts the scenario", field="trigger.event")
        _filters(trigger.get("where"), "trigger.where")
    elif kind in ("segment_entered", "segment_exited"):
        check_segment(backend, trigger.get("segment"), "trigger.segment")
    elif kind == "date":
        if not isinstance(trigger.get("trait"), str):
            raise DefinitionError("`trigger.trait` is required: a date trait such as birthday", field="trigger.trait")
        days = trigger.get("days_before", 0)
        if not isinstance(days, int) or not 0 <= days <= 366:
            raise DefinitionError("`trigger.days_before` must be a whole number of days (0-366)", field="trigger.days_before")
        if trigger.get("at") is not None:
            _clock_text(trigger["at"], "trigger.at")
    else:
        interest = trigger.get("interest", ["Product Viewed", "Product Added to Wishlist"])
        if not isinstance(interest, list) or not all(isinstance(i, str) for i in interest) or not interest:
            raise DefinitionError("`trigger.interest` must be a list of event names", field="trigger.interest")


def validate(backend: Backend, channels: Channels, definition: Mapping[str, Any]) -> dict[str, Any]:
    """The definition with defaults filled in, or a DefinitionError naming the field."""
    d = dict(definition)
    _trigger(backend, d.get("trigger"))
    audience = d.get("audience")
    if audience is not None:
        if not isinstance(audience, dict):
            raise DefinitionError("`audience` must be {segment, params?}", field="audience")
        check_segment(backend, audience.get("segment"), "audience.segment")
    reentry = dict(d.get("reentry") or {})
    reentry.setdefault("policy", "after_exit")
    if reentry["policy"] not in REENTRY:
        raise DefinitionError(f"`reentry.policy` must be one of {', '.join(REENTRY)}", field="reentry.policy")
    d["reentry"] = reentry
    goal = d.get("goal")
    if goal is not None and (not isinstance(goal, dict) or not isinstance(goal.get("event"), str)):
        raise DefinitionError("`goal.event` must name the event that ends the scenario (e.g. Order Completed)", field="goal.event")
    steps = d.get("steps")
    if not isinstance(steps, list) or not steps:
        raise DefinitionError("`steps` must be a non-empty list", field="steps")
    ids: dict[str, int] = {}
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise DefinitionError(f"`steps[{i}]` must be an object", field=f"steps[{i}]")
        step.setdefault("id", f"step{i + 1}")
        if not isinstance(step["id"], str) or step["id"] in ids or "~" in step["id"]:
            raise DefinitionError(f"`steps[{i}].id` {step['id']!r} is repeated or invalid", field=f"steps[{i}].id")
        ids[step["id"]] = i
        if step.get("type") not in STEPS:
            raise DefinitionError(f"`steps[{i}].type` {step.get('type')!r} must be one of {', '.join(STEPS)}", field=f"steps[{i}].type")
    for i, step in enumerate(steps):
        _step(backend, channels, step, i, steps)
    _no_cycles(steps, ids)
    return d


def successors(step: Mapping[str, Any], index: int, steps: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(field, step id) pairs this step may go to; None ends the journey."""
    default = steps[index + 1]["id"] if index + 1 < len(steps) else None
    kind = step["type"]
    if kind == "exit":
        return []
    if kind == "condition":
        return [("then", step.get("then", default)), ("else", step.get("else", default))]
    if kind == "split":
        return [(f"branches[{j}].next", b.get("next", default)) for j, b in enumerate(step.get("branches") or [])]
    return [("next", step.get("next", default))]


def _step(backend: Backend, channels: Channels, step: dict[str, Any], i: int, steps: list[dict[str, Any]]) -> None:
    field = f"steps[{i}]"
    kind = step["type"]
    if kind == "wait":
        if step.get("until") is not None:
            _clock_text(step["until"], f"{field}.until")
        else:
            duration(step.get("duration"), f"{field}.duration")
    elif kind == "send":
        name = step.get("channel")
        if not isinstance(name, str):
            raise DefinitionError(f"`{field}.channel` is required: a configured channel", field=f"{field}.channel")
        channel_kind = channels.check(name, f"{field}.channel")
        check_template(backend, step.get("template"), channel_kind, f"{field}.template")
        step["topic"] = topic_of(step.get("topic") or ("transactional" if step.get("transactional") else "marketing"))
        step["transactional"] = bool(step.get("transactional")) or step["topic"] == TRANSACTIONAL
    elif kind == "condition":
        given = [k for k in ("segment", "trait", "event") if step.get(k) is not None]
        if len(given) != 1:
            raise DefinitionError(f"`{field}` needs exactly one of segment, trait or event", field=field)
        if given[0] == "segment":
            check_segment(backend, step["segment"], f"{field}.segment")
        if given[0] == "trait" and step.get("op", "=") not in (*OPS, "exists"):
            raise DefinitionError(f"`{field}.op` must be one of {' '.join(OPS)} exists", field=f"{field}.op")
    elif kind == "split":
        branches = step.get("branches")
        if not isinstance(branches, list) or len(branches) < 2:
            raise DefinitionError(f"`{field}.branches` needs at least two branches", field=f"{field}.branches")
        for j, branch in enumerate(branches):
            if not isinstance(branch, dict) or not isinstance(branch.get("name"), str):
                raise DefinitionError(f"`{field}.branches[{j}].name` is required", field=f"{field}.branches[{j}].name")
            weight = branch.get("weight", 1)
            if not isinstance(weight, int | float) or weight <= 0:
                raise DefinitionError(f"`{field}.branches[{j}].weight` must be positive", field=f"{field}.branches[{j}].weight")
    elif kind == "update_trait":
        if not isinstance(step.get("trait"), str):
            raise DefinitionError(f"`{field}.trait` is required", field=f"{field}.trait")
    elif kind == "webhook":
        url = step.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise DefinitionError(f"`{field}.url` must be an http(s) URL", field=f"{field}.url")
        try:
            urlguard.check(url, urlguard.networks(channels.extra.get("webhook_allowed_networks") or ()))
        except urlguard.UnsafeUrl as error:
            raise DefinitionError(f"`{field}.url` {error}", field=f"{field}.url") from None
    ids = {s["id"] for s in steps}
    for name, target in successors(step, i, steps):
        if target is not None and target not in ids:
            raise DefinitionError(f"`{field}.{name}` {target!r} is not a step id; steps: {', '.join(sorted(ids))}",
                                  field=f"{field}.{name}")


def _no_cycles(steps: list[dict[str, Any]], ids: dict[str, int]) -> None:
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(step_id: str, path: list[str]) -> None:
        state[step_id] = 1
        index = ids[step_id]
        for _, target in successors(steps[index], index, steps):
            if target is None:
                continue
            if state.get(target) == 1:
                cycle = " -> ".join([*path[path.index(target):], target]) if target in path else target
                raise DefinitionError(f"the steps form a cycle: {cycle}; a journey must end", field=f"steps[{index}]")
            if state.get(target) is None:
                visit(target, [*path, target])
        state[step_id] = 2

    for step in steps:
        if step["id"] not in state:
            visit(step["id"], [step["id"]])
