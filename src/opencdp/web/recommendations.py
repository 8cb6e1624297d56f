"""Recommendations API: serve blocks to sites, apps and messages; manage blocks; report; retrain.

``GET /api/v1/recommendations/{block}`` is callable from a web page with the source's
public write key (Basic auth username or ``?write_key=``): read-only, and rate-limited
per client address (``recs_public_rate_per_s``). Admin keys with the ``read`` scope call
it without a limit. Everything else needs an admin key. Handlers are thin: the work is
in ``opencdp.recommendations``.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from opencdp.errors import AuthError, TerminalError
from opencdp.keys import KeyRing
from opencdp.recommendations import blocks as store
from opencdp.recommendations.blocks import ALGORITHMS, Block, BlockExists
from opencdp.recommendations.engine import Engine
from opencdp.recommendations.report import block_report
from opencdp.recommendations.rules import RuleError
from opencdp.web.auth import AuthRoute, Forbidden, Principal, authenticate, require_scope
from opencdp.web.body import basic_auth_user
from opencdp.web.errors import JSONResponse

router = APIRouter(prefix="/api/v1/recommendations", tags=["recommendations"], route_class=AuthRoute)
Reader = Annotated[Principal, Depends(require_scope("read"))]
Writer = Annotated[Principal, Depends(require_scope("write"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]
RESERVED = {"blocks", "model", "train", "algorithms", "clicks"}


class TooManyRequests(TerminalError):
    code = "too_many_requests"
    status = 429


class BlockIn(BaseModel):
    id: str = Field(description="a slug: letters, digits, '_' and '-'", examples=["home_for_you"])
    name: str | None = None
    description: str = ""
    algorithm: str = Field(description=f"one of {', '.join(ALGORITHMS)}", examples=["personal"])
    size: int = 10
    rules: dict[str, Any] = Field(default_factory=dict, examples=[{"max_per_category": 2, "repurchase_days": {"Living room": 365}}])
    variants: list[dict[str, Any]] = Field(default_factory=list, description="A/B variants: [{name, weight, algorithm?, size?, rules?}]")


class RateLimiter:
    """A token bucket per (source, client address): ``rate`` per second, bursts of ``2 * rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def admit(self, key: tuple[str, str]) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(key, (2 * self.rate, now))
            tokens = min(2 * self.rate, tokens + (now - at) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            return True


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.recommendations
    return engine


def _serving_caller(request: Request) -> None:
    """Admit a public write key (rate-limited) or an admin key with ``read``."""
    keys: KeyRing = request.app.state.keys
    basic = request.headers.get("authorization", "").lower().startswith("basic ")
    key = (basic_auth_user(request) if basic else None) or request.query_params.get("write_key")
    if key:
        source = keys.source_of(key)
        if source is not None:
            limiter: RateLimiter | None = getattr(request.app.state, "recs_limiter", None)
            if limiter is None:
                limiter = request.app.state.recs_limiter = RateLimiter(request.app.state.settings.recs_public_rate_per_s)
            client = request.client.host if request.client else ""
            if not limiter.admit((source, client)):
                raise TooManyRequests(
                    f"more than {limiter.rate:g} recommendation requests per second from this address with a write key; "
                    "slow down, or call from a server with an admin key", field="write_key",
                )
            return
        if key.startswith("wk_"):
            raise AuthError("the write key is unknown or revoked; create one with `opencdp keys create write <source>`",
                            field="write_key")
    principal = authenticate(request)
    if not principal.allows("read"):
        raise Forbidden("serving recommendations with an admin key needs the `read` scope", field="Authorization")


@router.get("/algorithms", summary="The algorithms a block can use")
def algorithms(principal: Reader) -> Any:
    return {"algorithms": [{"name": k, "description": v} for k, v in ALGORITHMS.items()]}


@router.get("/blocks", summary="All blocks")
def list_blocks(request: Request, principal: Reader) -> Any:
    return {"blocks": [b.to_dict() for b in store.list_blocks(_engine(request).backend)]}


def _parse(body: dict[str, Any]) -> Block:
    if body.get("id") in RESERVED:
        raise RuleError(f"`{body['id']}` is reserved by the API; choose another id", field="id")
    return Block.parse(body)


@router.post("/blocks", status_code=201, summary="Create a block (the definition is checked whole)")
def create_block(request: Request, principal: Writer, body: BlockIn) -> Any:
    engine = _engine(request)
    block = _parse(body.model_dump(exclude_none=True))
    if store.get(engine.backend, block.block_id) is not None:
        raise BlockExists(f"block `{block.block_id}` exists; change it with PUT /api/v1/recommendations/blocks/{block.block_id}",
                          field="id")
    store.save(engine.backend, block)
    engine.forget_block(block.block_id)
    return block.to_dict()


@router.get("/blocks/{block_id}", summary="A block")
def get_block(request: Request, principal: Reader, block_id: str) -> Any:
    return store.require(_engine(request).backend, block_id).to_dict()


@router.put("/blocks/{block_id}", summary="Replace a block's definition")
def update_block(request: Request, principal: Writer, block_id: str, body: BlockIn) -> Any:
    engine = _engine(request)
    store.require(engine.backend, block_id)
    if body.id != block_id:
        raise RuleError(f"the body's id `{body.id}` is not the path's `{block_id}`", field="id")
    block = _parse(body.model_dump(exclude_none=True))
    store.save(engine.backend, block)
    engine.forget_block(block_id)
    return block.to_dict()


@router.delete("/blocks/{block_id}", summary="Delete a block")
def delete_block(request: Request, principal: Writer, block_id: str) -> Any:
    engine = _engine(request)
    store.delete(engine.backend, block_id)
    engine.forget_block(block_id)
    return {"deleted": block_id}


@router.get("/blocks/{block_id}/report", summary="Impressions, clicks, conversions per A/B variant; the winner")
def report(
    request: Request, principal: Reader, block_id: str,
    window_days: Annotated[float, Query(gt=0, le=90, description="a conversion counts this long after a click")] = 7.0,
    min_impressions: Annotated[int, Query(ge=1)] = 100,
) -> Any:
    backend = _engine(request).backend
    store.require(backend, block_id)
    return block_report(backend, block_id, window_days=window_days, min_impressions=min_impressions)


@router.get("/model", summary="The model being served")
def model(request: Request, principal: Reader) -> Any:
    engine = _engine(request)
    snap = engine.snapshot()
    impressions = engine.impressions
    return {"version": snap.model.version, "trained_at": snap.model.trained_at, "personal": snap.model.personal,
            "stats": snap.model.stats, "last_error": engine.last_error,
            "ready": engine.ready(), "serving": "popularity while the model loads" if snap.warm else "model",
            "identities_ready": engine.identity_index(snap.model) is not None,
            "impressions": None if impressions is None else {"written": impressions.written, "pending": len(impressions),
                                                             "dropped": impressions.dropped}}


@router.post("/train", summary="Retrain now and swap the new model in (serving continues meanwhile)")
async def retrain(request: Request, principal: Admin) -> Any:
    engine = _engine(request)
    model = await run_in_threadpool(engine.train)
    return {"version": model.version, "personal": model.personal, "stats": model.stats}


@router.get("/clicks/{recommendation_id}", summary="A served item's tracked link: record the click, redirect to the product")
def click(
    request: Request,
    recommendation_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")],
    block: Annotated[str, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")],
    product_id: Annotated[str, Query(min_length=1, max_length=200)],
    variant: Annotated[str, Query(max_length=64)] = "default",
    profile_id: Annotated[str | None, Query(max_length=200)] = None,
) -> Any:
    """No key: the link is followed from e-mails and pages. It only ever redirects to the
    product's own catalogue URL (never to a URL from the query), and records a
    ``Recommendation Clicked`` attributed to the block and variant."""
    url = _engine(request).click(recommendation_id, block=block, variant=variant, product_id=product_id,
                                 profile_id=profile_id)
    return RedirectResponse(url, status_code=302)


@router.get("/{block}", summary="Serve a block: products for a visitor (write key or admin key)")
def serve(
    request: Request,
    block: str,
    profile_id: str | None = None,
    anonymous_id: str | None = None,
    user_id: str | None = None,
    product_id: Annotated[list[str] | None, Query(description="context products (repeat for a cart)")] = None,
    category: Annotated[str | None, Query(description="only products under this category prefix")] = None,
    region: Annotated[str | None, Query(description="popular blocks: popular among profiles of this city")] = None,
    limit: Annotated[int | None, Query(ge=1, le=store.MAX_SIZE)] = None,
    write_key: Annotated[str | None, Query(description="the site's public write key (instead of Basic auth)")] = None,
) -> Any:
    _serving_caller(request)
    answer = _engine(request).recommend(
        block, profile_id=profile_id, anonymous_id=anonymous_id, user_id=user_id, product_ids=product_id or (),
        limit=limit, category=category, region=region,
    )
    return JSONResponse(answer)
