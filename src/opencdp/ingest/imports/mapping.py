"""Column mapping files: which file column feeds which target, defaults, options.

A mapping file is TOML or YAML::

    kind = "customers"            # optional: check targets against this kind only

    [columns]                     # target = column name in the file
    email = "E-mail"
    customer_id = "client_code"

    [defaults]                    # constants for targets the file lacks or leaves empty
    country = "RU"

    [options]
    default_region = "RU"         # phone numbers written without a country code
    timestamp_format = "%d.%m.%Y %H:%M"
    delimiter = ";"
    encoding = "cp1251"           # CSV text encoding (default utf-8)
    timezone = "Europe/Moscow"    # zone of date-times written without an offset (default UTC)

Targets not mapped are looked up by their own name (case-insensitively), so a
file whose headers are the target names needs no mapping at all.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from opencdp.errors import TerminalError
from opencdp.ingest.imports.targets import SPECS, Spec

_SECTIONS = ("kind", "columns", "defaults", "options")


class MappingError(TerminalError):
    code = "invalid_mapping"


@dataclass(frozen=True)
class Options:
    default_region: str | None = None
    """Region for phone numbers without a country code; ``Settings.default_region`` if unset."""
    timestamp_format: str | None = None
    """strptime-style format tried before ISO 8601, e.g. ``%d.%m.%Y %H:%M``."""
    delimiter: str | None = None
    """CSV field separator; guessed from the header line if unset."""
    encoding: str = "utf-8"
    timezone: str | None = None
    """IANA zone for date-times without an offset; UTC if unset."""


@dataclass(frozen=True)
class Mapping:
    """Target -> file column, constant defaults, and reading options."""

    columns: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    options: Options = field(default_factory=Options)
    kind: str | None = None

    @classmethod
    def from_dict(cls, data: Any, origin: str = "mapping") -> Mapping:
        """Validate the parsed content of a mapping file (or an API parameter)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise MappingError(f"{origin}: expected a table with [columns], [defaults], [options]")
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise MappingError(
                f"{origin}: unknown section(s) {', '.join(unknown)}; use {', '.join(_SECTIONS)}",
                field=unknown[0],
            )
        kind = data.get("kind")
        if kind is not None and kind not in SPECS:
            raise MappingError(f"{origin}: kind {kind!r} is not one of {', '.join(SPECS)}", field="kind")
        columns = _string_table(data.get("columns"), f"{origin} [columns]", scalars=False)
        defaults = _string_table(data.get("defaults"), f"{origin} [defaults]", scalars=True)
        mapping = cls(columns, defaults, _options(data.get("options"), origin), kind)
        mapping.check_targets(SPECS[kind] if kind else None, origin)
        return mapping

    def to_dict(self) -> dict[str, Any]:
        """The mapping as ``from_dict`` reads it (e.g. to send it as the HTTP ``mapping`` parameter)."""
        body: dict[str, Any] = {"columns": dict(self.columns), "defaults": dict(self.defaults)}
        options = {f.name: getattr(self.options, f.name) for f in fields(Options)}
        body["options"] = {k: v for k, v in options.items() if v is not None and v != getattr(Options(), k)}
        if self.kind is not None:
            body["kind"] = self.kind
        return body

    def check_targets(self, spec: Spec | None, origin: str = "mapping") -> None:
        """Unknown targets are errors (a typo would otherwise silently drop a column)."""
        specs = [spec] if spec is not None else list(SPECS.values())
        valid = {t for s in specs for t in s.targets}
        for section, names in (("columns", self.columns), ("defaults", self.defaults)):
            unknown = sorted(set(names) - valid)
            if unknown:
                if spec is not None:
                    listing = f"valid targets for {spec.kind}: {', '.join(spec.targets)}"
                else:
                    listing = "valid targets: " + "; ".join(f"{s.kind}: {', '.join(s.targets)}" for s in specs)
                raise MappingError(
                    f"{origin} [{section}]: unknown target(s) {', '.join(unknown)}; {listing}",
                    field=unknown[0],
                )


def load_mapping(path: Path) -> Mapping:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) mapping file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise MappingError(f"cannot read the mapping file {path}: {error.strerror or error}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise MappingError(f"mapping file {path.name}: use a .toml, .yaml or .yml file")
    except tomllib.TOMLDecodeError as error:
        raise MappingError(f"mapping file {path.name} is not valid TOML: {error}") from None
    except yaml.YAMLError as error:
        raise MappingError(f"mapping file {path.name} is not valid YAML: {error}") from None
    return Mapping.from_dict(data, f"mapping file {path.name}")


def _string_table(value: Any, where: str, *, scalars: bool) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MappingError(f"{where} must be a table of target = value")
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool) and scalars:
            out[str(key)] = "true" if item else "false"
        elif isinstance(item, str) or (scalars and isinstance(item, int | float)):
            out[str(key)] = str(item)
        else:
            expected = "a text, number or boolean" if scalars else "a column name (text)"
            raise MappingError(f"{where}: `{key}` must be {expected}", field=str(key))
    return out


def _options(value: Any, origin: str) -> Options:
    if value is None:
        return Options()
    if not isinstance(value, dict):
        raise MappingError(f"{origin} [options] must be a table")
    known = [f.name for f in fields(Options)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise MappingError(
            f"{origin} [options]: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(known)}",
            field=unknown[0],
        )
    for key, item in value.items():
        if not isinstance(item, str) or not item:
            raise MappingError(f"{origin} [options]: `{key}` must be a non-empty text", field=key)
    delimiter: str | None = value.get("delimiter")
    if delimiter is not None:
        delimiter = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
        if len(delimiter) != 1:
            raise MappingError(f"{origin} [options]: `delimiter` must be one character, e.g. \";\"", field="delimiter")
    region = value.get("default_region")
    return Options(
        default_region=region.upper() if region else None,
        timestamp_format=value.get("timestamp_format"),
        delimiter=delimiter,
        encoding=value.get("encoding", "utf-8"),
        timezone=value.get("timezone"),
    )


@dataclass(frozen=True)
class Resolved:
    """The mapping applied to one file's header."""

    sources: dict[str, str]
    """target -> the file column that feeds it"""
    defaults: dict[str, str]
    extras: tuple[str, ...]
    """file columns no target uses (kept by kinds whose spec says so)"""

    def has(self, target: str) -> bool:
        return target in self.sources or target in self.defaults

    def label(self, target: str) -> str:
        """How error messages name a target: the file's column, with the target if renamed."""
        source = self.sources.get(target)
        if source is None:
            return f"`{target}`"
        return f"`{source}`" if source == target else f"`{source}` ({target})"

    def column(self, target: str) -> str:
        """The file column of ``target`` (the target name when it comes from a default)."""
        return self.sources.get(target, target)


def resolve(spec: Spec, mapping: Mapping, available: list[str]) -> Resolved:
    """Match targets to the file's columns; raise naming any missing required column."""
    mapping.check_targets(spec)
    by_folded: dict[str, str] = {}
    for name in available:
        by_folded.setdefault(name.strip().casefold(), name)
    sources: dict[str, str] = {}
    for target, wanted in mapping.columns.items():
        found = wanted if wanted in available else by_folded.get(wanted.strip().casefold())
        if found is None:
            raise MappingError(
                f"mapping: column `{wanted}` (for `{target}`) is not in the file; "
                f"the file has: {_listing(available)}",
                field=target,
            )
        sources[target] = found
    taken = set(sources.values())
    for target in spec.targets:
        if target in sources:
            continue
        found = by_folded.get(target.casefold())
        if found is not None and found not in taken:
            sources[target] = found
            taken.add(found)
    defaults = {t: v for t, v in mapping.defaults.items() if t in spec.targets}
    missing = [group for group in spec.required if not any(t in sources or t in defaults for t in group)]
    if missing:
        wanted_text = "; ".join(" or ".join(f"`{t}`" for t in group) for group in missing)
        first = missing[0][0]
        raise TerminalError(
            f"missing required column(s) for {spec.kind}: {wanted_text}. The file has: {_listing(available)}. "
            f'Rename the header, or map it in a mapping file, e.g. [columns] {first} = "<your column>"',
            field=first,
            code="missing_column",
        )
    extras = tuple(c for c in available if c not in taken and c.strip())
    return Resolved(sources, defaults, extras)


def _listing(columns: list[str]) -> str:
    return ", ".join(f"`{c}`" for c in columns) if columns else "(no columns)"
