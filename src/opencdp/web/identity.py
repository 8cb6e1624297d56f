"""Identity API: run probabilistic dedupe, and review the pairs it queued."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from opencdp.errors import TerminalError
from opencdp.identity.dedupe import DedupeSettings
from opencdp.identity.review import candidates, decide, run_dedupe
from opencdp.storage.base import Backend
from opencdp.web.auth import AuthRoute, Principal, require_scope

router = APIRouter(prefix="/api/v1/identity", tags=["identity"], route_class=AuthRoute)


class DedupeIn(BaseModel):
    auto_merge_at: float = Field(0.95, gt=0, le=1, description="merge pairs at least this likely")
    review_at: float = Field(0.70, gt=0, le=1, description="queue pairs at least this likely for review")
    apply: bool = Field(True, description="false: queue every pair for review, merge nothing")


class CandidateNotFound(TerminalError):
    status = 404
    code = "candidate_not_found"


class MergeRefused(TerminalError):
    status = 409
    code = "merge_refused"


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


@router.post("/dedupe", summary="Match profiles probabilistically: merge the sure pairs, queue the likely ones")
def dedupe(request: Request, principal: Annotated[Principal, Depends(require_scope("admin"))], body: DedupeIn) -> Any:
    if body.review_at > body.auto_merge_at:
        raise TerminalError(
            f"`review_at` ({body.review_at}) must not be above `auto_merge_at` ({body.auto_merge_at})", field="review_at"
        )
    request.app.state.collector.flush()
    settings = DedupeSettings(auto_merge_at=body.auto_merge_at, review_at=body.review_at)
    return dataclasses.asdict(run_dedupe(_backend(request), settings, apply=body.apply))


@router.get("/candidates", summary="Pairs queued for review, most likely first")
def list_candidates(
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("read"))],
    status: Literal["pending", "merged", "rejected", "refused"] = "pending",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    return principal.mask(candidates(_backend(request), status, limit))


@router.post("/candidates/{left}/{right}/{decision}", summary="Accept (merge) or reject a queued pair")
def decide_candidate(
    request: Request,
    principal: Annotated[Principal, Depends(require_scope("write"))],
    left: str,
    right: str,
    decision: Literal["accept", "reject"],
) -> Any:
    try:
        return decide(_backend(request), left, right, accept=decision == "accept", by=principal.key_id)
    except KeyError:
        raise CandidateNotFound(
            f"no pending pair {left} / {right}; list them with GET /api/v1/identity/candidates", field="left"
        ) from None
    except ValueError as error:
        raise MergeRefused(f"{error}; reject the pair instead", field="decision") from None
