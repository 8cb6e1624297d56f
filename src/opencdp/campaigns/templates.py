"""Message templates: Jinja2 in a sandbox, HTML-escaped, checked for undefined variables before use.

A template has a channel, a ``subject`` (email, push title), an ``html`` body (email, web push
and inbox may use it) and a ``text`` body (SMS, Viber, Telegram, push, the email's plain part).
Each part is Jinja2 rendered in an ``ImmutableSandboxedEnvironment``:

* the context is plain data only (``profile``, ``computed``, ``event``, ``params``, ``cart``,
  ``products``, ``recommendations``, ``campaign``, link URLs): no objects whose methods could
  lead out of it; the environment has no loader (``include``/``import`` of files fail), no
  default globals (``lipsum``, ``cycler``, ``joiner``, ``namespace`` are gone: their
  ``__globals__`` were the classic escape), and the sandbox refuses ``_``-prefixed and
  internal attributes (``__class__``, ``mro``, ``func_globals``...) and mutating methods;
* HTML parts are autoescaped: a trait value ``<script>`` arrives as ``&lt;script&gt;``;
* a missing variable renders empty where the author gave no fallback
  (``{{ profile.first_name | default("friend") }}``), but ``check`` lists every variable the
  template reads that the preview context lacks, and ``validate`` refuses a template that reads
  a name outside the context at all: activation fails with the reason, not the send.

Links are made trackable after rendering (``opencdp.campaigns.tracking.rewrite_links``), so
authors write plain ``<a href="https://shop/...">``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from opencdp.errors import TerminalError

CONTEXT_NAMES = frozenset(
    {
        "profile", "computed", "event", "params", "cart", "products", "recommendations", "campaign",
        "unsubscribe_url", "preferences_url", "view_in_browser_url", "now", "variant", "message_id",
    }
)
"""Top-level names a template may read."""
_PARTS = ("subject", "html", "text")
_MAX_SOURCE = 256 * 1024


class TemplateError(TerminalError):
    """A template that does not compile or reads names outside its context."""

    status = 422
    code = "invalid_template"


@dataclass(frozen=True)
class Template:
    template_id: str
    channel: str
    subject: str = ""
    html: str = ""
    text: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.template_id, "channel": self.channel, "subject": self.subject, "html": self.html,
            "text": self.text, "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], template_id: str | None = None) -> Template:
        tid = template_id or data.get("id")
        if not isinstance(tid, str) or not tid:
            raise TemplateError("`id` is required: a slug naming the template", field="id")
        channel = data.get("channel")
        if not isinstance(channel, str) or not channel:
            raise TemplateError("`channel` is required: the channel kind, e.g. email or sms", field="channel")
        parts = {}
        for part in (*_PARTS, "description"):
            value = data.get(part) or ""
            if not isinstance(value, str):
                raise TemplateError(f"`{part}` must be text", field=part)
            if len(value) > _MAX_SOURCE:
                raise TemplateError(f"`{part}` is longer than {_MAX_SOURCE} characters", field=part)
            parts[part] = value
        if not (parts["html"] or parts["text"]):
            raise TemplateError("a template needs `html` or `text` (or both)", field="text")
        return cls(tid, channel, parts["subject"], parts["html"], parts["text"], parts["description"])


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


@dataclass
class Check:
    """What ``check`` found: unknown top-level names are errors, missing values warnings."""

    errors: list[dict[str, str]] = field(default_factory=list)
    undefined: list[str] = field(default_factory=list)
    """Variables read that the preview context does not have (``profile.first_name``)."""

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": self.errors, "undefined": self.undefined}


# -- filters: formatting marketers need, all pure functions of plain values ----------------------
def _as_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and value:
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def _date(value: Any, fmt: str = "%d.%m.%Y") -> str:
    day = _as_date(value)
    return day.strftime(fmt) if day else ""


def _days_until(value: Any, today: Any = None) -> int | None:
    """Days from today to the date (a birthday counts to its next anniversary)."""
    day = _as_date(value)
    if day is None:
        return None
    now = _as_date(today) or dt.date.today()
    return (day - now).days


def _next_birthday_in(value: Any, today: Any = None) -> int | None:
    day = _as_date(value)
    if day is None:
        return None
    now = _as_date(today) or dt.date.today()
    for year in (now.year, now.year + 1):
        try:
            candidate = day.replace(year=year)
        except ValueError:  # 29 February
            candidate = dt.date(year, 3, 1)
        if candidate >= now:
            return (candidate - now).days
    return None


def _money(value: Any, currency: str = "RUB") -> str:
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return ""
    text = f"{amount:,.2f}".replace(",", "\u00a0").replace(".00", "")
    symbol = {"RUB": "\u20bd", "USD": "$", "EUR": "\u20ac"}.get(str(currency).upper(), str(currency))
    return f"{text}\u00a0{symbol}"


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=None, autoescape=autoescape, undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.globals.clear()  # lipsum, cycler, joiner, namespace, dict, range: none is needed, several were escapes
    env.globals["range"] = lambda *a: range(*a)[:1000]
    env.filters.update(date=_date, days_until=_days_until, next_birthday_in=_next_birthday_in, money=_money)
    return env


_HTML = _environment(autoescape=True)
_PLAIN = _environment(autoescape=False)
_COMPILED: dict[tuple[str, bool], jinja2.Template] = {}


def _compile(source: str, html: bool, part: str) -> jinja2.Template:
    key = (source, html)
    compiled = _COMPILED.get(key)
    if compiled is None:
        try:
            compiled = (_HTML if html else _PLAIN).from_string(source)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"`{part}` line {error.lineno}: {error.message}", field=part) from None
        if len(_COMPILED) > 2000:
            _COMPILED.clear()
        _COMPILED[key] = compiled
    return compiled


def render(template: Template, context: Mapping[str, Any]) -> Rendered:
    """Render the three parts; a sandbox violation is a TemplateError naming the part."""
    out = {}
    for part in _PARTS:
        source = getattr(template, part)
        if not source:
            out[part] = ""
            continue
        try:
            out[part] = _compile(source, part == "html", part).render(context)
        except jinja2.exceptions.SecurityError as error:
            raise TemplateError(f"`{part}` is not allowed: {error}", field=part, code="template_sandbox") from None
        except jinja2.TemplateError as error:
            raise TemplateError(f"`{part}`: {error}", field=part) from None
        except (TypeError, ValueError, ArithmeticError, AttributeError) as error:
            raise TemplateError(f"`{part}` failed to render: {type(error).__name__}: {error}", field=part) from None
    return Rendered(out["subject"].strip(), out["html"], out["text"])


def _paths(source: str, env: jinja2.Environment) -> set[str]:
    """Dotted variable paths read by a template (``profile.first_name``), without loop variables."""
    tree = env.parse(source)
    local: set[str] = set()
    for node in tree.find_all((nodes.For, nodes.Assign)):
        target: nodes.Node = node.target  # type: ignore[attr-defined]
        for name in target.find_all(nodes.Name) if not isinstance(target, nodes.Name) else [target]:
            local.add(name.name)
    found: set[str] = set()
    for read in tree.find_all((nodes.Getattr, nodes.Name)):
        path: list[str] = []
        current: Any = read
        while isinstance(current, nodes.Getattr):
            path.insert(0, current.attr)
            current = current.node
        if isinstance(current, nodes.Name) and current.name not in local:
            path.insert(0, current.name)
            found.add(".".join(path))
    # keep only the longest paths (profile.a.b implies profile.a)
    return {p for p in found if not any(o != p and o.startswith(p + ".") for o in found)}


def check(template: Template, context: Mapping[str, Any] | None = None) -> Check:
    """Compile every part, refuse names outside the context, and list paths the context lacks."""
    result = Check()
    for part in _PARTS:
        source = getattr(template, part)
        if not source:
            continue
        env = _HTML if part == "html" else _PLAIN
        try:
            _compile(source, part == "html", part)
            names = meta.find_undeclared_variables(env.parse(source))
        except TemplateError as error:
            result.errors.append({"field": part, "detail": error.detail})
            continue
        for name in sorted(names - CONTEXT_NAMES):
            hint = _suggest(name)
            result.errors.append(
                {"field": part, "detail": f"`{name}` is not a template variable; use one of "
                 f"{', '.join(sorted(CONTEXT_NAMES))}" + (f" (did you mean `{hint}`?)" if hint else "")}
            )
        if context is not None:
            for path in sorted(_paths(source, env)):
                if path.split(".")[0] in CONTEXT_NAMES and not _has(context, path) and path not in result.undefined:
                    result.undefined.append(path)
        if context is not None and result.ok:
            try:
                render(Template(template.template_id, template.channel, **{part: source}), context)
            except TemplateError as error:
                result.errors.append({"field": part, "detail": error.detail})
    return result


def validate(template: Template) -> None:
    """Raise TemplateError for the first problem ``check`` finds (used when saving and activating)."""
    found = check(template)
    if found.errors:
        first = found.errors[0]
        raise TemplateError(first["detail"], field=first["field"])


def _has(context: Mapping[str, Any], path: str) -> bool:
    value: Any = context
    for key in path.split("."):
        if isinstance(value, Mapping) and key in value and value[key] is not None:
            value = value[key]
        else:
            return False
    return True


def _suggest(name: str) -> str | None:
    import difflib

    close = difflib.get_close_matches(name, sorted(CONTEXT_NAMES), n=1)
    return close[0] if close else None


_TAG = re.compile(r"<[^>]+>")


def html_to_text(html: str) -> str:
    """A plain-text part for an email that has only HTML (crude, but every client shows something)."""
    text = re.sub(r"(?is)<(script|style).*?</\1>", "", html)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</h\d>|</li>", "\n", text)
    return re.sub(r"\n\s*\n+", "\n\n", _TAG.sub("", text)).strip()
