"""The recommendation engine: one per server process, serving every channel.

It holds a ``Snapshot`` (the trained model, the catalogue in the model's item order and
its prepared features) and replaces it whole — a retrain or a catalogue refresh builds
a new snapshot beside the old one and swaps the reference, so requests never see a
half-built model and nothing stops. A background thread loads the newest saved model
(or trains one) at startup, retrains every ``recs_retrain_interval_s`` and re-reads
stock and prices every ``recs_catalogue_refresh_s``. The session buffer (a loader
listener) adds what the visitor did in the last minutes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from sqlglot import exp

from opencdp.errors import TerminalError
from opencdp.recommendations import blocks as block_store
from opencdp.recommendations import scoring
from opencdp.recommendations.blocks import CONTEXT_ALGORITHMS, MAX_SIZE, Block, Variant
from opencdp.recommendations.data import (
    DEFAULT_WEIGHTS,
    Catalogue,
    read_catalogue,
    read_interactions,
    read_regions,
)
from opencdp.recommendations.model import Model, TrainParams, latest_model_path, train
from opencdp.recommendations.rules import Rules
from opencdp.recommendations.session import SessionBuffer
from opencdp.storage.base import Backend, param
from opencdp.storage.schema import IDENTITIES, PROFILE_MAP, RECOMMENDATION_MODELS

log = logging.getLogger(__name__)


class NotFound(TerminalError):
    code = "not_found"
    status = 404


@dataclass(frozen=True)
class Snapshot:
    model: Model
    catalogue: Catalogue
    features: scoring.Features
    index: dict[str, int]


def _canonical_of_identifier(backend: Backend) -> exp.Expression:
    return (
        exp.select(exp.func("coalesce", exp.column("canonical_id", "m"), exp.column("profile_id", "i")))
        .from_(backend.aliased_ref(IDENTITIES, "i"))
        .join(backend.aliased_ref(PROFILE_MAP, "m"), on=exp.column("profile_id", "m").eq(exp.column("profile_id", "i")),
              join_type="left")
        .where(exp.column("identifier", "i").eq(param("identifier")))
        .where(exp.column("deleted", "i").eq(exp.false()))
        .limit(1)
    )


def _canonical_of_profile(backend: Backend) -> exp.Expression:
    return (
        exp.select(exp.column("canonical_id")).from_(backend.table_ref(PROFILE_MAP))
        .where(exp.column("profile_id").eq(param("profile_id"))).limit(1)
    )


class Engine:
    def __init__(self, backend: Backend, settings: Any = None, *, model_dir: Path | None = None) -> None:
        self.backend = backend
        self.settings = settings if settings is not None else backend.settings
        data_dir = Path(getattr(self.settings, "data_dir", "data"))
        self.model_dir = model_dir or data_dir / "models"
        self.sessions = SessionBuffer(ttl_s=float(getattr(self.settings, "recs_session_ttl_s", 3600.0)))
        self._snapshot: Snapshot | None = None
        self._train_lock = threading.Lock()
        self._blocks: dict[str, tuple[float, Block | None]] = {}
        self._rules_cache: dict[tuple[int, str | None], Rules] = {}
        self._canonical: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    # -- models --------------------------------------------------------------------------
    def params(self) -> TrainParams:
        s = self.settings
        return TrainParams(
            personal=getattr(s, "recs_personal_algorithm", "als"),
            half_life_days=float(getattr(s, "recs_half_life_days", 90.0)),
            threads=int(getattr(s, "recs_train_threads", 2)),
        )

    def train(self, params: TrainParams | None = None) -> Model:
        """Train on the whole store, save the model, and swap it in."""
        with self._train_lock:
            interactions = read_interactions(self.backend, DEFAULT_WEIGHTS)
            catalogue = read_catalogue(self.backend)
            regions = read_regions(self.backend, interactions.users)
            model = train(interactions, catalogue, params or self.params(), regions)
            model.save(self.model_dir)
            self._record(model)
            self._swap(model, catalogue)
            return model

    def load_latest(self) -> bool:
        """Serve the newest saved model, if there is one."""
        path = latest_model_path(self.model_dir)
        if path is None:
            return False
        model = Model.load(path)
        self._swap(model, self._catalogue_for(model))
        return True

    def snapshot(self) -> Snapshot:
        """What requests are served from (the first caller loads or trains a model)."""
        snap = self._snapshot
        if snap is None:
            with self._train_lock:
                snap = self._snapshot
            if snap is None:
                if not self.load_latest():
                    self.train()
                snap = self._snapshot
        assert snap is not None
        return snap

    def refresh_catalogue(self) -> None:
        """Re-read stock, prices, images and URLs; new products are served after the next retrain."""
        snap = self._snapshot
        if snap is not None:
            self._swap(snap.model, self._catalogue_for(snap.model))

    def _catalogue_for(self, model: Model) -> Catalogue:
        """The store's catalogue in the model's item order (products gone from it count as out of stock)."""
        current = read_catalogue(self.backend)
        if list(current.product_id) == list(model.items):
            return current
        position = current.index()
        take = [position.get(str(p), -1) for p in model.items]
        table = pa.Table.from_pylist([
            _row(current, t) if t >= 0 else {"product_id": str(p), "stock": 0}
            for p, t in zip(model.items, take, strict=True)
        ])
        return Catalogue.from_table(table)

    def _swap(self, model: Model, catalogue: Catalogue) -> None:
        self._snapshot = Snapshot(model, catalogue, scoring.Features(catalogue), catalogue.index())
        self._rules_cache.clear()

    def _record(self, model: Model) -> None:
        row = {"version": model.version, "trained_at": dt.datetime.fromisoformat(model.trained_at),
               "personal": model.personal, "stats": json.dumps(model.stats)}
        self.backend.insert(RECOMMENDATION_MODELS.name,
                            pa.Table.from_pylist([row], schema=RECOMMENDATION_MODELS.arrow_schema))

    # -- background ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="recs-retrain", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        retrain = float(getattr(self.settings, "recs_retrain_interval_s", 0.0))
        refresh = float(getattr(self.settings, "recs_catalogue_refresh_s", 60.0))
        if self._stop.wait(2.0):  # let the server finish starting (and short-lived test apps never train)
            return
        try:
            self.snapshot()
        except Exception as error:  # an empty or broken store must not stop the server
            self.last_error = repr(error)
            log.exception("initial recommendation model failed")
        trained_at = refreshed_at = time.monotonic()
        while not self._stop.wait(1.0):
            now = time.monotonic()
            try:
                if retrain > 0 and now - trained_at >= retrain:
                    trained_at = now
                    self.train()
                elif refresh > 0 and now - refreshed_at >= refresh:
                    refreshed_at = now
                    self.refresh_catalogue()
            except Exception as error:
                self.last_error = repr(error)
                log.exception("recommendation retrain failed")

    # -- requests --------------------------------------------------------------------------
    def observe(self, events: pa.Table) -> None:
        self.sessions.observe(events)

    def block(self, block_id: str) -> Block:
        """A block, cached for a few seconds (saves through the API invalidate it at once)."""
        cached = self._blocks.get(block_id)
        if cached is None or time.monotonic() - cached[0] > 5.0:
            cached = (time.monotonic(), block_store.get(self.backend, block_id))
            self._blocks[block_id] = cached
        if cached[1] is None:
            self._blocks.pop(block_id, None)
            block_store.require(self.backend, block_id)  # raises, listing the blocks there are
        assert cached[1] is not None
        return cached[1]

    def forget_block(self, block_id: str) -> None:
        self._blocks.pop(block_id, None)

    def canonical(self, identifier: str, *, profile: bool) -> str | None:
        """The canonical profile of a profile id (``profile``) or a ``kind:value`` identifier; None if unknown."""
        key = ("p:" if profile else "i:") + identifier
        hit = self._canonical.get(key)
        if hit is not None and time.monotonic() - hit[0] < 60.0:
            return hit[1]
        if profile:
            rows = self.backend.run_rows(_canonical_of_profile, profile_id=identifier)
        else:
            rows = self.backend.run_rows(_canonical_of_identifier, identifier=identifier)
        found = str(rows[0][0]) if rows and rows[0][0] is not None else None
        self._canonical[key] = (time.monotonic(), found)
        while len(self._canonical) > 100_000:
            self._canonical.popitem(last=False)
        return found

    def resolve(self, profile_id: str | None, anonymous_id: str | None, user_id: str | None) -> tuple[str | None, list[str]]:
        """The canonical profile of the visitor and the ids its session may be under; (None, []) for a new visitor.

        An explicit ``profile_id`` nobody has is an error (a 404): a caller with a profile
        id expects that profile. An unknown anonymous or user id is simply a new visitor.
        """
        snap = self.snapshot()
        if profile_id:
            if snap.model.user_row(profile_id) is not None:
                return profile_id, [profile_id]
            canonical = self.canonical(profile_id, profile=True)
            if canonical is None:
                if self.sessions.knows(profile_id):
                    return profile_id, [profile_id]
                raise NotFound(f"no profile `{profile_id}`; pass the visitor's anonymous_id or user_id to serve a new "
                               "visitor the popular fallback", field="profile_id")
            return canonical, list(dict.fromkeys([canonical, profile_id]))
        for kind, value in (("user_id", user_id), ("anonymous_id", anonymous_id)):
            if not value:
                continue
            identifier = f"{kind}:{value}"
            seen = self.sessions.profile_of(identifier)
            canonical = self.canonical(identifier, profile=False)
            ids = [p for p in (canonical, seen) if p]
            if kind == "user_id" and snap.model.user_row(value) is not None and not any(
                snap.model.user_row(p) is not None for p in ids
            ):
                ids.insert(0, value)  # stores whose profile ids are the user ids (imports keyed by customer id)
            if ids:
                return ids[0], list(dict.fromkeys(ids))
        return None, []

    def recommend(
        self, block_id: str | Block, *, profile_id: str | None = None, anonymous_id: str | None = None,
        user_id: str | None = None, product_ids: Sequence[str] = (), limit: int | None = None,
        category: str | None = None, region: str | None = None, now: float | None = None,
    ) -> dict[str, Any]:
        """A block's products for a visitor (see ``opencdp.recommendations.recommend``)."""
        block = block_id if isinstance(block_id, Block) else self.block(block_id)
        if limit is not None and not 1 <= limit <= MAX_SIZE:
            raise TerminalError(f"`limit` must be from 1 to {MAX_SIZE}, not {limit}", field="limit")
        snap = self.snapshot()
        model, catalogue = snap.model, snap.catalogue
        profile, ids = self.resolve(profile_id, anonymous_id, user_id)
        visitor = profile or anonymous_id or user_id or ""
        variant = block.variant_for(visitor)
        size = limit or variant.size
        context = []
        for product in product_ids:
            position = snap.index.get(product)
            if position is None:
                raise NotFound(f"no product `{product}` in the catalogue", field="product_id")
            context.append(position)
        now_s = now if now is not None else time.time()
        row = model.user_row(profile) if profile else None
        session = self.sessions.session(ids, snap.index, now_s) if ids else scoring.Session()
        if not context and variant.algorithm in CONTEXT_ALGORITHMS:
            context = self._last_touched(model, row, session)
        scores = self._scores(snap, variant, row, session, context, region)
        bought: dict[int, float] = {}
        if row is not None:
            start, end = model.last_bought.indptr[row], model.last_bought.indptr[row + 1]
            bought = dict(zip(model.last_bought.indices[start:end].tolist(), model.last_bought.data[start:end].tolist(),
                              strict=True))
        for position, at in session.bought.items():
            bought[position] = max(bought.get(position, 0.0), at)
        rules = self._rules(variant, category)
        fallback = scoring.popular(model, "popular") if variant.algorithm != "recently_viewed" else None
        chosen = rules.select(scores, catalogue, size, fallback=fallback, exclude=context, bought=bought, now_s=now_s,
                              index=snap.index)
        items: list[dict[str, Any]] = []
        for position, score, filled in chosen:
            shown = catalogue.product(position, score)
            shown["fallback"] = filled
            items.append(shown)
        evidence = bool(scores.any())
        return {
            "block": block.block_id,
            "variant": variant.name,
            "algorithm": variant.algorithm,
            "recommendation_id": uuid.uuid4().hex,
            "model_version": model.version,
            "profile_id": profile,
            "fallback": None if evidence and not all(i["fallback"] for i in items) else ("popular" if items else None),
            "items": items,
        }

    def _rules(self, variant: Variant, category: str | None) -> Rules:
        key = (id(variant.rules), category)
        rules = self._rules_cache.get(key)
        if rules is None:
            rules = variant.rules if not category else dataclasses.replace(variant.rules, categories=(category,))
            self._rules_cache[key] = rules
        return rules

    def _scores(self, snap: Snapshot, variant: Variant, row: int | None, session: scoring.Session,
                context: list[int], region: str | None = None) -> np.ndarray:
        model, features, rules = snap.model, snap.features, variant.rules
        algorithm = variant.algorithm
        if algorithm in scoring.POPULAR_KINDS:
            return scoring.popular(model, algorithm, region)
        if algorithm == "recently_viewed":
            return scoring.recently_viewed(model, row, session)
        if algorithm == "personal":
            if row is None and not session:
                return np.zeros(features.n, np.float32)
            return scoring.personal(model, features, row, session)
        if not context:
            return np.zeros(features.n, np.float32)
        if algorithm == "similar":
            return scoring.similar(model, features, context)
        if algorithm in ("bought_together", "also_bought"):
            return scoring.associations(
                model, context, by="order" if algorithm == "bought_together" else "customer",
                min_support=rules.min_support, min_confidence=rules.min_confidence, min_lift=rules.min_lift,
            )
        return scoring.complementary(model, features, context, min_lift=max(rules.min_lift, 1.0))

    @staticmethod
    def _last_touched(model: Model, row: int | None, session: scoring.Session) -> list[int]:
        """Without a context product: the one the visitor viewed last (session first, then history)."""
        if session.viewed:
            return session.viewed[:1]
        if row is not None:
            start, end = model.last_viewed.indptr[row], model.last_viewed.indptr[row + 1]
            if end > start:
                return [int(model.last_viewed.indices[start + int(np.argmax(model.last_viewed.data[start:end]))])]
            start, end = model.last_bought.indptr[row], model.last_bought.indptr[row + 1]
            if end > start:
                return [int(model.last_bought.indices[start + int(np.argmax(model.last_bought.data[start:end]))])]
        return []


def _row(catalogue: Catalogue, i: int) -> dict[str, Any]:
    attributes = catalogue.attributes[i]
    return {
        "product_id": str(catalogue.product_id[i]), "name": catalogue.name[i], "category": catalogue.category[i],
        "room": catalogue.room[i], "brand": catalogue.brand[i], "price": _num(catalogue.price[i]),
        "old_price": _num(catalogue.old_price[i]), "currency": catalogue.currency[i], "stock": _num(catalogue.stock[i]),
        "url": catalogue.url[i], "image_url": catalogue.image_url[i],
        "consumption_days": _num(catalogue.consumption_days[i]), "attributes": json.dumps(attributes) if attributes else None,
    }


def _num(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
