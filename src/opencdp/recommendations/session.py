"""The current session of every visitor, as the server's loader stores their events.

``SessionBuffer.observe`` is a loader listener (like real-time segments): each stored
batch of events passes through it, and it keeps per profile the last products viewed,
added and bought and the last searches, for ``ttl_s``. The personal block reads it at
request time, so a Product Viewed changes what the visitor is offered as soon as the
event is loaded — long before the next retrain. It also remembers which profile an
``anonymous_id`` or ``user_id`` belongs to, so a site asking by its anonymous id is
answered from the session without a store query.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from opencdp.recommendations.data import PURCHASE
from opencdp.recommendations.scoring import Session

SEARCH = "Products Searched"
_KIND_WEIGHTS = {"Product Viewed": 1.0, "Product Clicked": 1.0, "Product Added": 3.0, "Product Added to Wishlist": 2.0}


@dataclass
class _Visit:
    products: deque[tuple[float, str, str]] = field(default_factory=lambda: deque(maxlen=50))
    """(epoch seconds, product id, event), oldest first."""
    searches: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=5))
    bought: dict[str, float] = field(default_factory=dict)
    seen_at: float = 0.0


class SessionBuffer:
    def __init__(self, *, ttl_s: float = 3600.0, half_life_s: float = 900.0, max_profiles: int = 200_000) -> None:
        self.ttl_s = ttl_s
        self.half_life_s = half_life_s
        self.max_profiles = max_profiles
        self._visits: OrderedDict[str, _Visit] = OrderedDict()
        self._aliases: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, events: pa.Table) -> None:
        """A loader listener: note the product events of a stored batch."""
        if events.num_rows == 0 or "profile_id" not in events.column_names:
            return
        missing = [None] * events.num_rows  # once: a default built per row made each batch quadratic
        columns = {name: events.column(name).to_pylist() if name in events.column_names else missing for name in
                   ("profile_id", "event", "product_id", "properties", "anonymous_id", "user_id")}
        times = [t.timestamp() if t is not None else time.time() for t in events.column("timestamp").to_pylist()] \
            if "timestamp" in events.column_names else [time.time()] * events.num_rows
        with self._lock:
            for n, profile in enumerate(columns["profile_id"]):
                if profile is None:
                    continue
                for kind in ("anonymous_id", "user_id"):
                    value = columns[kind][n]
                    if value:
                        self._alias(f"{kind}:{value}", profile)
                name = columns["event"][n]
                if name not in _KIND_WEIGHTS and name not in (PURCHASE, SEARCH):
                    continue
                visit = self._visit(profile)
                at = times[n]
                visit.seen_at = max(visit.seen_at, at)
                if name in _KIND_WEIGHTS and columns["product_id"][n]:
                    visit.products.append((at, str(columns["product_id"][n]), name))
                elif name == SEARCH:
                    query = _properties(columns["properties"][n]).get("query")
                    if isinstance(query, str) and query.strip():
                        visit.searches.append((at, query.strip()))
                elif name == PURCHASE:
                    props = _properties(columns["properties"][n])
                    lines = props.get("products")
                    for line in lines if isinstance(lines, list) else []:
                        if isinstance(line, Mapping) and line.get("product_id"):
                            visit.bought[str(line["product_id"])] = at
                    if columns["product_id"][n]:
                        visit.bought[str(columns["product_id"][n])] = at

    def _visit(self, profile: str) -> _Visit:
        visit = self._visits.get(profile)
        if visit is None:
            visit = self._visits[profile] = _Visit()
            while len(self._visits) > self.max_profiles:
                self._visits.popitem(last=False)
        else:
            self._visits.move_to_end(profile)
        return visit

    def _alias(self, identifier: str, profile: str) -> None:
        self._aliases[identifier] = profile
        self._aliases.move_to_end(identifier)
        while len(self._aliases) > self.max_profiles:
            self._aliases.popitem(last=False)

    def profile_of(self, identifier: str) -> str | None:
        """The profile a recent event with ``identifier`` (``kind:value``) was stored under."""
        with self._lock:
            return self._aliases.get(identifier)

    def knows(self, profile: str) -> bool:
        with self._lock:
            return profile in self._visits

    def session(self, profiles: list[str], index: Mapping[str, int], now: float | None = None) -> Session:
        """The recent activity of these profile ids (a profile and what it was merged from), for scoring."""
        now = now if now is not None else time.time()
        out = Session()
        recent: list[tuple[float, int]] = []
        with self._lock:
            for profile in profiles:
                visit = self._visits.get(profile)
                if visit is None or now - visit.seen_at > self.ttl_s:
                    continue
                for at, product, name in visit.products:
                    position = index.get(product)
                    if position is None or now - at > self.ttl_s:
                        continue
                    weight = _KIND_WEIGHTS[name] * 0.5 ** (max(now - at, 0.0) / self.half_life_s)
                    out.items[position] = out.items.get(position, 0.0) + weight
                    if name == "Product Viewed":
                        recent.append((at, position))
                out.searches += [q for at, q in visit.searches if now - at <= self.ttl_s]
                for product, at in visit.bought.items():
                    position = index.get(product)
                    if position is not None:
                        out.bought[position] = max(out.bought.get(position, 0.0), at)
        seen: set[int] = set()
        for _, position in sorted(recent, reverse=True):
            if position not in seen:
                seen.add(position)
                out.viewed.append(position)
        return out


def _properties(text: object) -> dict[str, object]:
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
