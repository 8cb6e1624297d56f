"""Computed traits API: list, read, declare, change and remove computed traits.

Definitions have the format of ``computed_traits_file`` entries (``opencdp.profiles.computed``),
as JSON. Traits declared here are computed on every profile (``GET /api/v1/profiles/{id}``
-> ``computed``) beside the built-ins and the file's, and segments may use them by name.
Built-in and file traits are listed but cannot be changed here (409).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response

from opencdp.errors import TerminalError
from opencdp.profiles import definitions
from opencdp.profiles.computed import ComputedTrait, TraitError
from opencdp.storage.base import Backend
from opencdp.web.auth import AuthRoute, Principal, require_scope

router = APIRouter(prefix="/api/v1/computed-traits", tags=["computed traits"], route_class=AuthRoute)
Reader = Annotated[Principal, Depends(require_scope("read"))]
Writer = Annotated[Principal, Depends(require_scope("write"))]
_EXAMPLE = {
    "name": "orders_30d",
    "description": "Orders in the last 30 days",
    "aggregation": "count",
    "event": "Order Completed",
    "window": "30d",
}
Definition = Annotated[dict[str, Any], Body(description="a computed trait definition", examples=[_EXAMPLE])]


class InvalidTrait(TerminalError):
    status = 422
    code = "invalid_trait"


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def _parse(backend: Backend, body: Any, name: str | None = None) -> ComputedTrait:
    try:
        return definitions.parse(backend, body, name=name)
    except TraitError as error:
        raise InvalidTrait(error.detail, field=error.field) from None


@router.get("", summary="Every computed trait: built-in, from the file, declared here")
def list_traits(request: Request, principal: Reader) -> Any:
    return {"traits": [item.to_dict() for item in definitions.declared(_backend(request))]}


@router.post("", status_code=201, summary="Declare a computed trait")
def create_trait(request: Request, principal: Writer, body: Definition) -> Any:
    backend = _backend(request)
    item, _ = definitions.declare(backend, _parse(backend, body), replace=False)
    return item.to_dict()


@router.get("/{name}", summary="One computed trait")
def get_trait(request: Request, principal: Reader, name: str) -> Any:
    return definitions.find(_backend(request), name).to_dict()


@router.put("/{name}", summary="Declare or replace a computed trait (200 replaced, 201 created)")
def put_trait(request: Request, response: Response, principal: Writer, name: str, body: Definition) -> Any:
    backend = _backend(request)
    item, created = definitions.declare(backend, _parse(backend, body, name), replace=True)
    if created:
        response.status_code = 201
    return item.to_dict()


@router.delete("/{name}", status_code=204, summary="Stop computing a trait declared here")
def delete_trait(request: Request, principal: Writer, name: str) -> Response:
    definitions.remove(_backend(request), name)
    return Response(status_code=204)
