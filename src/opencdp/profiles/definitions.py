"""Every computed trait a profile has: built-ins, the configured file, and those declared through the API.

The three share one namespace. Built-ins (``computed.BUILTIN``) and the traits of
``Settings.computed_traits_file`` are read-only here (change the file, then restart);
traits declared through the API (``/api/v1/computed-traits``, ``opencdp traits``) are
kept in the table ``computed_trait_definitions`` as ``ComputedTrait.to_dict()`` JSON,
one row per name, upserted; removing one marks its row ``deleted``. Each definition is
validated by ``ComputedTrait.from_dict`` and compiled once before it is stored, so a
stored trait always compiles.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
from sqlglot import exp

from opencdp.errors import TerminalError
from opencdp.profiles.computed import BUILTIN, ComputedTrait, TraitError, compile_trait, load_traits
from opencdp.storage.base import Backend
from opencdp.storage.schema import COMPUTED_TRAIT_DEFINITIONS

log = logging.getLogger(__name__)
_lock = threading.Lock()  # check-then-write of one process's declarations


class TraitNotFound(TerminalError):
    status = 404
    code = "trait_not_found"


class TraitConflict(TerminalError):
    """The name is taken: by another API trait (create), or by a built-in or file trait (any change)."""

    status = 409
    code = "trait_exists"


@dataclass(frozen=True)
class Declared:
    """A computed trait with where it comes from: ``builtin``, ``file`` or ``api``."""

    trait: ComputedTrait
    origin: str
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.trait.name,
            "origin": self.origin,
            "definition": self.trait.to_dict(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@functools.cache
def _file_traits(path: Path) -> tuple[ComputedTrait, ...]:
    return load_traits(path)


def file_traits(backend: Backend) -> tuple[ComputedTrait, ...]:
    """The traits of the store's ``computed_traits_file`` (none without settings or file); read once."""
    path = getattr(backend.settings, "computed_traits_file", None)
    return _file_traits(Path(path)) if path is not None else ()


def _api_query(backend: Backend) -> exp.Expression:
    return (
        exp.select("name", "definition", "created_at", "updated_at")
        .from_(backend.table_ref(COMPUTED_TRAIT_DEFINITIONS))
        .where(exp.column("deleted").not_())
        .order_by("name")
    )


def api_traits(backend: Backend) -> list[Declared]:
    """The traits declared through the API, by name.

    A stored definition this version no longer reads is left out, with a warning in
    the log (declare it again to fix it).
    """
    found = []
    for row in backend.run(_api_query).to_pylist():
        try:
            trait = ComputedTrait.from_dict(msgspec.json.decode(row["definition"]))
        except (TraitError, msgspec.DecodeError) as error:
            log.warning("computed trait %r in computed_trait_definitions is left out: %s", row["name"], error)
            continue
        found.append(Declared(trait, "api", row["created_at"], row["updated_at"]))
    return found


def declared(backend: Backend) -> list[Declared]:
    """Every trait with its origin: built-ins, then the file's, then the API's."""
    fixed = [Declared(t, "builtin") for t in BUILTIN] + [Declared(t, "file") for t in file_traits(backend)]
    taken = {d.trait.name for d in fixed}
    return fixed + [d for d in api_traits(backend) if d.trait.name not in taken]


def all_traits(backend: Backend) -> tuple[ComputedTrait, ...]:
    """Built-ins + file traits + API traits: what every profile's ``computed`` holds, by name unique."""
    return tuple(d.trait for d in declared(backend))


def find(backend: Backend, name: str) -> Declared:
    for item in declared(backend):
        if item.trait.name == name:
            return item
    raise TraitNotFound(
        f"there is no computed trait {name[:80]!r}; GET /api/v1/computed-traits lists them", field="name"
    )


def _read_only(item: Declared) -> TraitConflict:
    where = "is built in" if item.origin == "builtin" else "is declared in computed_traits_file (edit the file instead)"
    return TraitConflict(
        f"the computed trait {item.trait.name!r} {where}: choose another name for an API trait", field="name"
    )


def parse(backend: Backend, data: Any, *, name: str | None = None) -> ComputedTrait:
    """A validated definition (``TraitError``, 422, naming the field, otherwise).

    ``name`` (from the URL) fills in a missing ``name`` and must match a given one.
    """
    if not isinstance(data, Mapping):
        raise TraitError(
            'a computed trait definition is a JSON object, e.g. {"name": "orders_30d", "aggregation": "count", '
            '"event": "Order Completed", "window": "30d"}'
        )
    if name is not None:
        given = data.get("name", name)
        if given != name:
            raise TraitError(
                f"`name` {str(given)[:80]!r} differs from the name in the URL {name[:80]!r}; leave it out or make them equal",
                field="name",
            )
        data = {**data, "name": name}
    trait = ComputedTrait.from_dict(data)
    compile_trait(trait, backend, dt.datetime.now(dt.UTC))  # what compiling finds (fields of the source) is 422 too
    return trait


def declare(backend: Backend, trait: ComputedTrait, *, replace: bool) -> tuple[Declared, bool]:
    """Store ``trait``; returns it and whether it was created (not replaced).

    ``replace`` False (create): a name already declared is a conflict. Names of built-in
    and file traits are always.
    """
    with _lock:
        current = {d.trait.name: d for d in declared(backend)}
        existing = current.get(trait.name)
        if existing is not None and existing.origin != "api":
            raise _read_only(existing)
        if existing is not None and not replace:
            raise TraitConflict(
                f"a computed trait {trait.name!r} exists; change it with PUT /api/v1/computed-traits/{trait.name}",
                field="name",
            )
        now = _now()
        created = existing.created_at if existing is not None and existing.created_at is not None else now
        _write(backend, trait.name, msgspec.json.encode(trait.to_dict()).decode(), created, now, deleted=False)
        return Declared(trait, "api", created, now), existing is None


def remove(backend: Backend, name: str) -> Declared:
    """Stop computing the API trait ``name``; returns what it was."""
    with _lock:
        item = find(backend, name)
        if item.origin != "api":
            raise _read_only(item)
        now = _now()
        _write(backend, name, msgspec.json.encode(item.trait.to_dict()).decode(), item.created_at or now, now, deleted=True)
        return item


def _now() -> dt.datetime:
    """The time, at the store's precision (milliseconds): what is answered is what a later read gives."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _write(backend: Backend, name: str, definition: str, created: dt.datetime, now: dt.datetime, *, deleted: bool) -> None:
    stamp = pa.timestamp("ms", tz="UTC")
    backend.upsert(
        COMPUTED_TRAIT_DEFINITIONS,
        pa.table(
            {
                "name": [name],
                "definition": [definition],
                "created_at": pa.array([created], stamp),
                "updated_at": pa.array([now], stamp),
                "deleted": [deleted],
            },
            schema=COMPUTED_TRAIT_DEFINITIONS.arrow_schema,
        ),
    )
