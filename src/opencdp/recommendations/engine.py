"""The recommendation engine: one per server process, serving every channel.

It holds a ``Snapshot`` (the trained model, the catalogue in the model's item order and
its prepared features) and replaces it whole — a retrain or a catalogue refresh builds
a new snapshot beside the old one and swaps the reference, so requests never see a
half-built model and nothing stops. A background thread loads the newest saved model
(or trains one) at startup, retrains every ``recs_retrain_interval_s`` and re-reads
stock and prices every ``recs_catalogue_refresh_s`` (products new to the catalogue are
served at once from their attributes, ``coldstart``). The session buffer (a loader
listener) adds what the visitor did in the last minutes.

A request reads memory only: blocks (re-read in the background every few seconds and
at once when saved through the API), the identity index (``identities``: profile ids
and identifiers -> model rows, rebuilt with each model), the model's per-profile
purchase history plus the session's purchases (already-bought and repurchase rules).
The store is asked only about ids the index cannot place — a profile with no history,
or an id newer than the index — once each, cached. While the model loads at startup,
blocks are served from the saved model's popularity, marked ``fallback: "popular"``.
Served answers are noted for the impression log, written in batches off the request path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import multiprocessing
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pyarrow as pa
from sqlglot import exp

from opencdp.children import exit_with_parent
from opencdp.errors import TerminalError
from opencdp.recommendations import blocks as block_store
from opencdp.recommendations import coldstart, scoring
from opencdp.recommendations.blocks import CONTEXT_ALGORITHMS, MAX_SIZE, Block, Variant
from opencdp.recommendations.data import (
    DEFAULT_WEIGHTS,
    PYTHON_SLICE,
    Catalogue,
    Interactions,
    catalogue_version,
    read_catalogue,
    read_interactions,
    read_popularity_counts,
    read_regions,
)
from opencdp.recommendations.identities import NO_HISTORY, IdentityIndex
from opencdp.recommendations.impressions import ImpressionLog, clicked_event, write_events
from opencdp.recommendations.model import (
    Model,
    TrainParams,
    latest_model_path,
    popularity_model,
    read_popularity,
    train,
)
from opencdp.recommendations.rules import Rules
from opencdp.recommendations.session import SessionBuffer
from opencdp.storage.base import Backend, param
from opencdp.storage.schema import IDENTITIES, PROFILE_MAP, RECOMMENDATION_MODELS

log = logging.getLogger(__name__)


CLICKS = "/api/v1/recommendations/clicks"
"""Where a served item's tracked link points (``web.recommendations.click``)."""


class NotFound(TerminalError):
    code = "not_found"
    status = 404


@dataclass(frozen=True)
class Snapshot:
    model: Model
    catalogue: Catalogue
    features: scoring.Features
    index: dict[str, int]
    warm: bool = False
    """A popularity-only stand-in served while the real model loads."""


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
        self._lock = threading.Lock()
        self._blocks: dict[str, tuple[float, Block | None]] = {}
        self._rules_cache: dict[tuple[int, str | None], Rules] = {}
        self._all_blocks: dict[str, Block] | None = None
        self._canonical: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._identities: tuple[str, IdentityIndex] | None = None
        """(model version, index): only used with the model it was built against."""
        self._warm: Snapshot | None = None
        self._catalogue_version: tuple[Any, ...] = ()
        self._loading = threading.Event()
        """Set while the background thread loads or trains the first model: requests get the warm snapshot."""
        self.impressions = ImpressionLog(backend) if getattr(self.settings, "recs_record_impressions", True) else None
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
            factors=int(getattr(s, "recs_als_factors", 32)),
            iterations=int(getattr(s, "recs_als_iterations", 10)),
        )

    def train(self, params: TrainParams | None = None) -> Model:
        """Train on the whole store, save the model, and swap it in."""
        with self._train_lock:
            interactions = read_interactions(self.backend, DEFAULT_WEIGHTS)
            catalogue = read_catalogue(self.backend)
            regions = read_regions(self.backend, interactions.users)
            if self._thread is not None and getattr(self.settings, "recs_train_in_subprocess", True):
                model = Model.load(_train_elsewhere(interactions, catalogue, params or self.params(), regions, self.model_dir))
            else:
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
        self._swap(*self._catalogue_for(Model.load(path)))
        return True

    def snapshot(self) -> Snapshot:
        """What requests are served from (the first caller loads or trains a model, unless the background does)."""
        snap = self._snapshot
        if snap is None and self._loading.is_set() and threading.current_thread() is not self._thread:
            return self._warm_snapshot()
        if snap is None:
            with self._train_lock:
                snap = self._snapshot
            if snap is None:
                if not self.load_latest():
                    self.train()
                snap = self._snapshot
        assert snap is not None
        return snap

    def ready(self) -> bool:
        """Whether the real model is served (not the warm-up popularity)."""
        return self._snapshot is not None

    def _warm_snapshot(self) -> Snapshot:
        """Popularity only, from the newest saved model's arrays or (none saved) purchase counts in the store."""
        warm = self._warm
        if warm is None:
            with self._lock:
                warm = self._warm
                if warm is None:
                    path = latest_model_path(self.model_dir)
                    if path is not None:
                        model = read_popularity(path)
                    else:
                        counts = read_popularity_counts(self.backend)
                        items = np.asarray(sorted(counts), dtype=object)
                        bought = np.asarray([counts[p] for p in items], np.float32)
                        model = popularity_model(items, bought, np.zeros(len(items), np.float32), bought, bought)
                    model, catalogue = self._catalogue_for(model)
                    warm = self._warm = Snapshot(model, catalogue, scoring.Features(catalogue), catalogue.index(), warm=True)
        return warm

    def refresh_catalogue(self) -> None:
        """Re-read stock, prices, images and URLs, and serve products new to the catalogue (cold start).

        Skipped when the catalogue has not changed since the last read (one aggregate
        query): rebuilding the snapshot is Python work that competes with requests.
        """
        snap = self._snapshot
        if snap is None:
            return
        version = catalogue_version(self.backend)
        if version and version == self._catalogue_version:
            return
        self._swap(*self._catalogue_for(snap.model))

    def _catalogue_for(self, model: Model) -> tuple[Model, Catalogue]:
        """The store's catalogue in the model's item order (products gone from it count as out of stock),
        and the model widened by the products it has not seen (``coldstart.extend``).

        Notes the catalogue's version (read first: a change while reading shows at the next
        refresh), so the first refresh does not rebuild the snapshot of an unchanged catalogue."""
        self._catalogue_version = catalogue_version(self.backend)
        current = read_catalogue(self.backend)
        if list(current.product_id) == list(model.items):
            return model, current
        position = current.index()
        known = set(str(p) for p in model.items)
        new = [str(p) for p in current.product_id if str(p) not in known]
        items = [str(p) for p in model.items] + new
        take = [position.get(p, -1) for p in items]
        table = pa.Table.from_pylist([
            _row(current, t) if t >= 0 else {"product_id": p, "stock": 0} for p, t in zip(items, take, strict=True)
        ])
        catalogue = Catalogue.from_table(table)
        if new:
            trained = len(model.items)
            model = coldstart.extend(model, new, coldstart.prior_popularity(model.popular, catalogue, trained),
                                     coldstart.prior_popularity(model.trending, catalogue, trained))
        return model, catalogue

    def _swap(self, model: Model, catalogue: Catalogue) -> None:
        """Publish a new snapshot; a serving engine replacing a model builds the new one's identity index first.

        Published the other way round, every request for an id the new model cannot place
        (any anonymous visitor) asked the store until the index was built, seconds later.
        The first model of a start is published at once (known profiles get their personal
        blocks seconds earlier; the index follows in the background).
        """
        model.user_index()  # built here (the background), not by the first request that needs it
        replacing = self._snapshot is not None and self._snapshot.model.version != model.version
        if self._thread is not None and replacing and self.identity_index(model) is None:
            self._guard(lambda: self._index_identities(model), "loading the identity index")
        self._snapshot = Snapshot(model, catalogue, scoring.Features(catalogue), catalogue.index())
        self._rules_cache.clear()

    def load_identities(self) -> None:
        """Rebuild the identity index against the served model (a scan of profile_map and identities)."""
        snap = self._snapshot
        if snap is not None:
            self._index_identities(snap.model)

    def _index_identities(self, model: Model) -> None:
        self._identities = (model.version, IdentityIndex.load(self.backend, model.user_index(), model.users))

    def identity_index(self, model: Model) -> IdentityIndex | None:
        found = self._identities
        return found[1] if found is not None and found[0] == model.version else None

    def load_blocks(self) -> None:
        """Every saved block into memory (requests never read blocks from the store)."""
        self._all_blocks = {b.block_id: b for b in block_store.list_blocks(self.backend)}

    def _record(self, model: Model) -> None:
        row = {"version": model.version, "trained_at": dt.datetime.fromisoformat(model.trained_at),
               "personal": model.personal, "stats": json.dumps(model.stats)}
        self.backend.insert(RECOMMENDATION_MODELS.name,
                            pa.Table.from_pylist([row], schema=RECOMMENDATION_MODELS.arrow_schema))

    # -- background ------------------------------------------------------------------------
    def start(self) -> None:
        """Serve: load (or train) the model in the background, refresh blocks, catalogue and identities, write impressions."""
        if latest_model_path(self.model_dir) is not None:
            self._loading.set()  # requests are served the saved popularity until the model is in memory
        self._thread = threading.Thread(target=self._run, name="recs-retrain", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._flush_impressions()

    def _run(self) -> None:
        retrain = float(getattr(self.settings, "recs_retrain_interval_s", 0.0))
        refresh = float(getattr(self.settings, "recs_catalogue_refresh_s", 60.0))
        identities_every = float(getattr(self.settings, "recs_identity_refresh_s", 600.0))
        # a saved model loads at once; training waits for the server to finish starting (short-lived test apps never train)
        if self._loading.is_set() or not self._stop.wait(2.0):
            self._guard(self.load_blocks, "loading blocks")
            self._loading.set()
            try:
                self._guard(self.snapshot, "initial recommendation model")
            finally:
                self._loading.clear()
            snap = self._snapshot
            if snap is not None and self.identity_index(snap.model) is None:  # a training run has built it already
                self._guard(self.load_identities, "loading the identity index")
        trained_at = refreshed_at = identities_at = blocks_at = flushed_at = time.monotonic()
        while not self._stop.wait(1.0):
            now = time.monotonic()
            if now - flushed_at >= 5.0:  # fewer, larger writes: each is a load the listeners see
                flushed_at = now
                self._flush_impressions()
            if now - blocks_at >= 5.0:
                blocks_at = now
                self._guard(self.load_blocks, "loading blocks")
            if retrain > 0 and now - trained_at >= retrain:
                trained_at = identities_at = now
                self._guard(self.train, "recommendation retrain")
            elif refresh > 0 and now - refreshed_at >= refresh:
                refreshed_at = now
                self._guard(self.refresh_catalogue, "catalogue refresh")
            elif identities_every > 0 and now - identities_at >= identities_every:
                identities_at = now
                self._guard(self.load_identities, "loading the identity index")

    def _guard(self, work: Any, what: str) -> None:
        """Run background work; a failure is logged and kept in ``last_error``, never stops the server."""
        try:
            work()
        except Exception as error:
            self.last_error = f"{what}: {error!r}"
            log.exception("%s failed", what)

    def _flush_impressions(self) -> None:
        if self.impressions is not None and len(self.impressions):
            self._guard(self.impressions.flush, "writing impressions")

    # -- requests --------------------------------------------------------------------------
    def observe(self, events: pa.Table) -> None:
        self.sessions.observe(events)

    def block(self, block_id: str) -> Block:
        """A block from memory (the background re-reads them; saves through the API replace one at once)."""
        blocks = self._all_blocks
        if blocks is not None and block_id in blocks:
            return blocks[block_id]
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
        """A block was saved or deleted: serve its new definition from the next request on."""
        self._blocks.pop(block_id, None)
        if self._all_blocks is not None:
            found = block_store.get(self.backend, block_id)
            blocks = dict(self._all_blocks)
            if found is None:
                blocks.pop(block_id, None)
            else:
                blocks[block_id] = found
            self._all_blocks = blocks

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
        Answered from the model and the identity index; the store only for what they cannot place.
        """
        snap = self.snapshot()
        model = snap.model
        index = self.identity_index(model)
        if profile_id:
            if model.user_row(profile_id) is not None or snap.warm:
                return profile_id, [profile_id]
            row = index.profile(profile_id) if index is not None else None
            if row is not None and row >= 0:
                merged_into = str(model.users[row])
                return merged_into, list(dict.fromkeys([merged_into, profile_id]))
            if row is None and self.sessions.knows(profile_id):
                return profile_id, [profile_id]
            found = self.canonical(profile_id, profile=True)  # no history in the model, or newer than the index
            if found is None:
                if self.sessions.knows(profile_id):
                    return profile_id, [profile_id]
                raise NotFound(f"no profile `{profile_id}`; pass the visitor's anonymous_id or user_id to serve a new "
                               "visitor the popular fallback", field="profile_id")
            return found, list(dict.fromkeys([found, profile_id]))
        for kind, value in (("user_id", user_id), ("anonymous_id", anonymous_id)):
            if not value:
                continue
            identifier = f"{kind}:{value}"
            seen = self.sessions.profile_of(identifier)
            canonical = None if snap.warm else self._canonical_of(identifier, model, index)
            ids = [p for p in (canonical, seen) if p]
            if kind == "user_id" and model.user_row(value) is not None and not any(
                model.user_row(p) is not None for p in ids
            ):
                ids.insert(0, value)  # stores whose profile ids are the user ids (imports keyed by customer id)
            if ids:
                return ids[0], list(dict.fromkeys(ids))
        return None, []

    def _canonical_of(self, identifier: str, model: Model, index: IdentityIndex | None) -> str | None:
        """The canonical profile of a ``kind:value`` identifier: from the index, the store if it cannot say."""
        if index is None:
            return self.canonical(identifier, profile=False)
        row = index.identifier(identifier)
        if row is None:
            return None  # unknown when the index was built; later ones reach the session buffer's aliases
        if row == NO_HISTORY:
            return self.canonical(identifier, profile=False)
        return str(model.users[row])

    def recommend(
        self, block_id: str | Block, *, profile_id: str | None = None, anonymous_id: str | None = None,
        user_id: str | None = None, product_ids: Sequence[str] = (), limit: int | None = None,
        category: str | None = None, region: str | None = None, now: float | None = None, record: bool = True,
    ) -> dict[str, Any]:
        """A block's products for a visitor (see ``opencdp.recommendations.recommend``).

        ``record``: note the answer as an impression (a caller that only previews, or that
        will not show it, passes False).
        """
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
        recommendation_id = uuid.uuid4().hex
        tracked = {"block": block.block_id, "variant": variant.name, **({"profile_id": profile} if profile else {})}
        link = f"{CLICKS}/{recommendation_id}?{urlencode(tracked)}"
        items: list[dict[str, Any]] = []
        for position, score, filled in chosen:
            shown = catalogue.product(position, score)
            shown["fallback"] = filled or snap.warm
            shown["click_url"] = f"{link}&{urlencode({'product_id': shown['product_id']})}"
            items.append(shown)
        evidence = bool(scores.any()) and not snap.warm
        answer = {
            "block": block.block_id,
            "variant": variant.name,
            "algorithm": variant.algorithm,
            "recommendation_id": recommendation_id,
            "model_version": None if snap.warm else model.version,
            "profile_id": profile,
            "fallback": None if evidence and not all(i["fallback"] for i in items) else ("popular" if items else None),
            "items": items,
        }
        if self.impressions is not None and record and items and self._thread is not None:  # serving: flushed by _run
            self.impressions.note(answer, anonymous_id=anonymous_id, user_id=user_id)
        return answer

    def click(self, recommendation_id: str, *, block: str, variant: str, product_id: str, profile_id: str | None) -> str:
        """Record a click through a served item's tracked link; the product page to send the visitor to."""
        snap = self.snapshot()
        position = snap.index.get(product_id)
        url = snap.catalogue.url[position] if position is not None else None
        if not url:
            raise NotFound(f"no product `{product_id}` with a page in the catalogue", field="product_id")
        row = clicked_event(recommendation_id, block=block, variant=variant, product_id=product_id, profile_id=profile_id,
                            at=dt.datetime.now(dt.UTC))
        if self.impressions is not None:
            self.impressions.add(row)
        else:
            write_events(self.backend, [row])
        return str(url)

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


def _train_elsewhere(
    interactions: Interactions, catalogue: Catalogue, params: TrainParams, regions: np.ndarray, directory: Path,
) -> Path:
    """Train in a child process and return the saved model's path.

    A serving process that trains holds the GIL through minutes of scipy work (sparse
    products do not release it), and every request waits behind it; in a child only
    the hand-over and the final load touch the server's interpreter. The profile ids and
    regions travel as Arrow (a few buffers): pickling 1.7M Python strings held the GIL
    for half a second.
    """
    users, portable_regions = _portable(interactions.users), _portable(regions)
    rest = dataclasses.replace(interactions, users=np.empty(0, dtype=object))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=exit_with_parent) as pool:  # not orphaned by a killed server
        return pool.submit(_train_and_save, rest, users, catalogue, params, portable_regions, directory).result()


def _portable(strings: np.ndarray) -> pa.ChunkedArray:
    """Python strings as Arrow, converted a slice at a time (each slice a short hold of the GIL)."""
    return pa.chunked_array([pa.array(strings[start:start + PYTHON_SLICE], pa.string())
                             for start in range(0, len(strings), PYTHON_SLICE)], pa.string())


def _train_and_save(
    interactions: Interactions, users: pa.ChunkedArray, catalogue: Catalogue, params: TrainParams,
    regions: pa.ChunkedArray, directory: Path,
) -> Path:
    interactions = dataclasses.replace(interactions, users=np.asarray(users.to_pylist(), dtype=object))
    return train(interactions, catalogue, params, np.asarray(regions.to_pylist(), dtype=object)).save(directory)


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
