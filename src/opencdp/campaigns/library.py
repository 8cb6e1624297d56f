"""Ready-made scenarios to start from, each with the templates it uses.

``install(backend, name)`` saves the templates (if not there yet) and the scenario as a
draft; edit it, then activate (which validates it against the store: its segments must exist
and its channels be configured). Event names follow the Segment e-commerce spec the demo shop
uses (``Product Viewed``, ``Product Added``, ``Checkout Started``, ``Order Completed``).
"""

from __future__ import annotations

import copy
from typing import Any

from opencdp.campaigns import store
from opencdp.storage.base import Backend

_FOOTER = '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · <a href="{{ preferences_url }}">Preferences</a></p>'
_HELLO = "{{ profile.first_name | default('there') }}"


def _email(subject: str, body: str) -> dict[str, Any]:
    return {"channel": "email", "subject": subject, "html": f"<html><body><p>Hello {_HELLO},</p>{body}{_FOOTER}</body></html>"}


_CART_ITEMS = ('{% for item in cart %}<p><a href="{{ item.url | default(\'https://shop.example/cart\') }}">{{ item.name }}</a>'
               " — {{ item.price | money }}</p>{% endfor %}")
_RECS = ('{% for p in recommendations %}<p><a href="{{ p.url }}">{{ p.name }}</a> {{ p.price | money }}</p>{% endfor %}')

TEMPLATES: dict[str, dict[str, Any]] = {
    "welcome_1": _email("Welcome, {{ profile.first_name | default('friend') }}!", "<p>Thanks for joining us.</p>" + _RECS),
    "welcome_2": _email("Ideas for every room", "<p>Our bestsellers this month:</p>" + _RECS),
    "cart_reminder": _email("You left something in your cart", _CART_ITEMS + '<p><a href="https://shop.example/cart">Back to cart</a></p>'),
    "cart_sms": {"channel": "sms", "text": "{{ profile.first_name | default('Hi') }}, your cart is waiting: https://shop.example/cart"},
    "browse_reminder": _email("Still thinking about it?", "{% for p in products %}<p>{{ p.name }}</p>{% endfor %}" + _RECS),
    "back_in_stock": _email("Back in stock: {{ products[0].name | default('your item') }}",
                            '{% for p in products %}<p><a href="{{ p.url }}">{{ p.name }}</a> is back.</p>{% endfor %}'),
    "price_drop": _email("Price drop: {{ products[0].name | default('an item you liked') }}",
                         "{% for p in products %}<p>{{ p.name }}: now {{ p.price | money }} "
                         "(was {{ params.old_value | money }})</p>{% endfor %}"),
    "cross_sell": _email("Complete your {{ params.category | default('room') }}",
                         "<p>Goes well with what you bought:</p>" + _RECS),
    "birthday": _email("Happy birthday, {{ profile.first_name | default('friend') }}!",
                       "<p>A gift from us: {{ profile.bonus_balance | default(500) }} bonus points.</p>"),
    "bonus_expiry": _email("Your {{ profile.bonus_balance | default('') }} bonus points expire soon",
                           "<p>They expire on {{ profile.bonus_expires_at | date }}.</p>" + _RECS),
    "win_back": _email("We miss you", "<p>Here is what is new:</p>" + _RECS),
    "replenish": _email("Time to restock?", "<p>It may be time to reorder {{ params.name | default('your item') }}.</p>"),
}

SCENARIOS: dict[str, dict[str, Any]] = {
    "welcome_series": {
        "name": "Welcome series",
        "trigger": {"type": "event", "event": "Signed Up"},
        "reentry": {"policy": "never"},
        "steps": [
            {"id": "welcome", "type": "send", "channel": "email", "template": "welcome_1"},
            {"id": "wait", "type": "wait", "duration": "3d"},
            {"id": "ideas", "type": "send", "channel": "email", "template": "welcome_2"},
        ],
    },
    "abandoned_cart": {
        "name": "Abandoned cart",
        "trigger": {"type": "event", "event": "Checkout Started"},
        "goal": {"event": "Order Completed"},
        "reentry": {"policy": "after_exit", "cooldown_hours": 24},
        "steps": [
            {"id": "wait", "type": "wait", "duration": "1h"},
            {"id": "split", "type": "split", "branches": [
                {"name": "A", "weight": 45, "next": "mail"}, {"name": "B", "weight": 45, "next": "mail"},
                {"name": "control", "weight": 10, "next": None}]},
            {"id": "mail", "type": "send", "channel": "email", "template": "cart_reminder"},
            {"id": "wait2", "type": "wait", "duration": "1d"},
            {"id": "opened", "type": "condition", "event": "Message Opened", "then": None, "else": "sms"},
            {"id": "sms", "type": "send", "channel": "sms", "template": "cart_sms"},
        ],
    },
    "abandoned_browse": {
        "name": "Abandoned browse",
        "trigger": {"type": "event", "event": "Product Viewed"},
        "goal": {"event": "Product Added"},
        "reentry": {"policy": "after_exit", "cooldown_hours": 72},
        "steps": [
            {"id": "wait", "type": "wait", "duration": "4h"},
            {"id": "mail", "type": "send", "channel": "email", "template": "browse_reminder"},
        ],
    },
    "back_in_stock": {
        "name": "Back in stock",
        "trigger": {"type": "back_in_stock", "interest": ["Product Viewed", "Product Added to Wishlist"], "within_days": 30},
        "reentry": {"policy": "always"},
        "steps": [{"id": "mail", "type": "send", "channel": "email", "template": "back_in_stock"}],
    },
    "price_drop": {
        "name": "Price drop",
        "trigger": {"type": "price_drop", "interest": ["Product Viewed", "Product Added to Wishlist"], "within_days": 30,
                    "min_drop_percent": 10},
        "reentry": {"policy": "always", "cooldown_hours": 24},
        "steps": [{"id": "mail", "type": "send", "channel": "email", "template": "price_drop"}],
    },
    "post_purchase_cross_sell": {
        "name": "Post-purchase cross-sell (kitchen set -> table and chairs)",
        "trigger": {"type": "event", "event": "Order Completed", "where": {"properties.category": {"in": ["Kitchen", "Kitchen/Sets"]}}},
        "reentry": {"policy": "after_exit"},
        "steps": [
            {"id": "wait", "type": "wait", "duration": "7d"},
            {"id": "mail", "type": "send", "channel": "email", "template": "cross_sell"},
        ],
    },
    "birthday": {
        "name": "Birthday",
        "trigger": {"type": "date", "trait": "birthday", "days_before": 0, "annual": True},
        "reentry": {"policy": "always"},
        "steps": [
            {"id": "morning", "type": "wait", "until": "10:00"},
            {"id": "mail", "type": "send", "channel": "email", "template": "birthday"},
        ],
    },
    "bonus_expiry": {
        "name": "Bonus expiry",
        "trigger": {"type": "date", "trait": "bonus_expires_at", "days_before": 7, "annual": False},
        "reentry": {"policy": "always"},
        "steps": [{"id": "mail", "type": "send", "channel": "email", "template": "bonus_expiry"}],
    },
    "win_back": {
        "name": "Win-back of at-risk customers",
        "trigger": {"type": "segment_entered", "segment": "at_risk"},
        "goal": {"event": "Order Completed"},
        "reentry": {"policy": "after_exit", "cooldown_hours": 720},
        "steps": [
            {"id": "mail", "type": "send", "channel": "email", "template": "win_back"},
            {"id": "wait", "type": "wait", "duration": "7d"},
            {"id": "tag", "type": "update_trait", "trait": "win_back_sent", "value": True},
        ],
    },
    "replenishment": {
        "name": "Replenishment reminder",
        "trigger": {"type": "event", "event": "Order Completed", "where": {"properties.consumable": True}},
        "reentry": {"policy": "always"},
        "steps": [
            {"id": "wait", "type": "wait", "duration": "30d"},
            {"id": "mail", "type": "send", "channel": "email", "template": "replenish"},
        ],
    },
}


def names() -> list[str]:
    return sorted(SCENARIOS)


def install(backend: Backend, name: str, scenario_id: str | None = None) -> store.Stored:
    """Save the ready-made scenario ``name`` (as a draft) and the templates it uses."""
    if name not in SCENARIOS:
        raise store.NotFound(f"no ready-made scenario {name!r}; choose one of {', '.join(names())}", field="name")
    definition = copy.deepcopy(SCENARIOS[name])
    for step in definition["steps"]:
        template = step.get("template")
        if template and store.get(backend, store.TEMPLATE, template) is None:
            store.save(backend, store.TEMPLATE, template, template, {"id": template, **TEMPLATES[template]}, status=store.ACTIVE)
    title = definition.pop("name")
    return store.save(backend, store.SCENARIO, scenario_id or name, title, definition, status=store.DRAFT)
